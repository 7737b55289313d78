"""One check's result: Check(area, name, status, value, detail, fix, link). Checks are small
functions returning a list of these; they never raise (a probe that cannot run is a skip with
its reason)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

STATUSES = ("ok", "warn", "fail", "skip")  # ordered by nothing; SEVERITY orders them
SEVERITY = {"ok": 0, "skip": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True, slots=True)
class Check:
    area: str
    name: str
    status: str
    value: str = ""
    detail: str = ""
    fix: str = ""
    link: str = ""

    def __post_init__(self) -> None:
        assert self.status in STATUSES, self.status
        assert self.status != "skip" or self.detail, f"{self.name}: a skip needs its reason"

    def to_dict(self) -> dict:
        return asdict(self)


def area(name: str):
    """Constructors bound to one area: ok, warn, fail, skip = area("gpu")."""

    def make(status: str):
        def build(check: str, value: object = "", detail: str = "", fix: str = "", link: str = "") -> Check:
            return Check(name, check, status, "" if value is None else str(value), detail, fix, link)

        return build

    return make("ok"), make("warn"), make("fail"), make("skip")
