"""Third-party files in the tree (htmx for the console, axe-core for the browser tests) are
byte for byte what the registry served for the version recorded beside them: nothing fetched
at run time, nothing edited by hand."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
RECORDS = [
    ROOT / "src/sluice/proxy/console/static/VENDORED.json",
    ROOT / "tests/browser/vendor/VENDORED.json",
]
FILES = [
    (record, name, entry)
    for record in RECORDS
    for name, entry in json.loads(record.read_text())["files"].items()
]


@pytest.mark.parametrize(("record", "name", "entry"), FILES, ids=[f[1] for f in FILES])
def test_each_vendored_file_has_the_recorded_checksum(
    record: Path, name: str, entry: dict[str, str]
) -> None:
    data = (record.parent / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{name} is not {entry['package']}"
    assert entry["version"] in entry["tarball"]
    assert entry["integrity"].startswith("sha512-")


def test_the_console_serves_only_vendored_or_its_own_files() -> None:
    static = ROOT / "src/sluice/proxy/console/static"
    vendored = set(json.loads((static / "VENDORED.json").read_text())["files"])
    own = {"console.css", "favicon.svg", "VENDORED.json", "htmx.LICENSE"}
    assert {p.name for p in static.iterdir()} == vendored | own
