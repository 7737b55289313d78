"""`invoke report`: records under results/ -> tables (Markdown, CSV), plots, one self-contained
HTML file, and a comparison against a baseline."""
