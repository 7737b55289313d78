"""`invoke build`: profile (docker/profiles) -> checked against the compatibility rules -> hashed
lock (docker/locks) -> rendered Dockerfile and context -> a Docker engine -> a labelled image,
verified from inside, with a manifest under results/images/."""
