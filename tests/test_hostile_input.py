"""Hostile datasets: path-traversing ids, control characters, huge values, wrong types,
internal addresses, broken files.

A bad row must become a ``failed`` manifest line with ``invalid_row`` and its reason, and
submit nothing; a bad file must fail the run with a clear ``DatasetError`` before anything
is submitted; nothing may ever be written outside the output folder; and every valid row
must still succeed. (Internal hosts spelled as a WHATWG URL parser reads them are refused when
a row is parsed: ``tests/unit/test_hostile_urls.py``.)
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from prefect_seedream.engine.dataset import DatasetError
from prefect_seedream.simulator import RunningSimulator
from tests.helpers import manifest, run_dataset, summary_of, write_csv, write_jsonl

pytestmark = pytest.mark.usefixtures("prefect_api")


def tree(root: Path) -> set[str]:
    """Every path below root (files, folders, symlinks), relative to it."""
    found = set()
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


# -- hostile rows in one run -------------------------------------------------------------------

ESCAPE = f"seedream-escape-{uuid.uuid4().hex[:12]}"

#: id -> why it is hostile; all of these are valid ids and must stay inside the output.
HOSTILE_VALID_IDS = [
    "../../etc/x",
    f"../../../../../../../../../../tmp/{ESCAPE}",
    f"/abs/path/{ESCAPE}",
    "..\\..\\win\\system32",
    "C:\\Windows\\evil",
    ".",
    "..",
    "...",
    "~/.ssh/authorized_keys",
    ".seedream/tasks/hijack",
    "manifest.jsonl",
    "a/" + "b" * 120,
    "x" * 128,
    "x" * 127 + "y",  # same first 80 characters as the previous id
    "rlo\u202egnp.exe",
    "émoji-🚀-ünïcode",
    "CON",
    "-rf",
]

#: (record, words of the reason). The record's prompt, when valid text, is unique.
INVALID_RECORDS: list[tuple[Any, str]] = [
    ({"id": "x" * 129, "prompt": "too long id"}, "at most 128 printable characters"),
    ({"id": "nul\x00byte", "prompt": "nul id"}, "printable characters"),
    ({"id": "new\nline", "prompt": "newline id"}, "printable characters"),
    ({"id": "\x1b[2Jclear", "prompt": "escape id"}, "printable characters"),
    ({"id": ["a", "list"], "prompt": "list id"}, "id must be text"),
    ({"id": "long-prompt", "prompt": "p" * 2001}, "2001 characters"),
    ({"id": "huge-prompt", "prompt": "p" * 100_000}, "100000 characters"),
    ({"id": "bell-prompt", "prompt": "ring \x07 the bell"}, "control characters"),
    ({"id": "blank-prompt", "prompt": "   "}, "prompt is empty"),
    ({"id": "no-prompt"}, "prompt is missing"),
    ({"id": "n-abc", "prompt": "n abc", "n": "abc"}, "n must be a whole number"),
    ({"id": "n-bool", "prompt": "n bool", "n": True}, "n must be a whole number"),
    ({"id": "n-frac", "prompt": "n frac", "n": 2.5}, "n must be a whole number"),
    ({"id": "n-zero", "prompt": "n zero", "n": 0}, "outside [1, 15]"),
    ({"id": "n-huge", "prompt": "n huge", "n": 10**30}, "outside [1, 15]"),
    ({"id": "prompt-num", "prompt": 12345}, "prompt must be text, got int"),
    ({"id": "prompt-obj", "prompt": {"text": "x"}}, "prompt must be text, got dict"),
    ({"id": "urls-obj", "prompt": "urls obj", "image_urls": {"a": 1}}, "image_urls must be a list"),
    ({"id": "urls-nums", "prompt": "urls nums", "image_urls": [1, 2]}, "image_urls must be a list"),
    ({"id": "model-num", "prompt": "model num", "model": 45}, "not a model name"),
    ({"id": "size-obj", "prompt": "size obj", "size": {"w": 1}}, "size must be text"),
    ([1, 2, 3], "JSON list, not an object"),
    ('"just a string"', "JSON str, not an object"),  # raw line: a JSON string
    ("{not json at all", "not valid JSON"),  # raw line
]

#: Internal addresses in every spelling the issue lists (and a few more).
INTERNAL_URLS = [
    "http://2130706433/a.png",  # decimal IPv4
    "http://0x7f000001/a.png",  # hex IPv4
    "http://0x7f.0.0.1/a.png",
    "http://0177.0.0.1/a.png",  # octal
    "http://127.1/a.png",
    "http://0/a.png",
    "http://0.0.0.0/a.png",
    "http://[::1]/a.png",  # IPv6 loopback
    "http://[0:0:0:0:0:0:0:1]/a.png",
    "http://[::ffff:127.0.0.1]/a.png",  # IPv4-mapped
    "http://[::ffff:7f00:1]/a.png",
    "http://[::127.0.0.1]/a.png",  # IPv4-compatible
    "http://[fe80::1]/a.png",
    "http://localhost/a.png",
    "http://LOCALHOST./a.png",
    "http://sub.localhost/a.png",
    "http://10.1.2.3/a.png",
    "http://172.16.0.1/a.png",
    "http://192.168.0.1/a.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/a.png",
    "https://user:pass@127.0.0.1/a.png",
    "https://example.com@127.0.0.1/a.png",
    "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/a.png",  # fullwidth digits
    "http://127.0.0.1\u3002/a.png",  # ideographic full stop
    "http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3/a.png",  # circled "localhost"
]
NON_HTTP_URLS = ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://example.com/"]


def _hostile_rows() -> tuple[list[Any], dict[str, str], dict[int, str]]:
    """JSONL values, valid row ids -> prompt, and invalid line number -> reason words."""
    values: list[Any] = []
    valid: dict[str, str] = {}
    invalid: dict[int, str] = {}
    for index, row_id in enumerate(HOSTILE_VALID_IDS):
        prompt = f"a paper lantern, hostile id number {index}"
        values.append({"id": row_id, "prompt": prompt})
        valid[row_id] = prompt
    values.append({"id": "max-prompt", "prompt": "q" * 1991 + " lantern!"})
    valid["max-prompt"] = values[-1]["prompt"]
    assert len(valid["max-prompt"]) == 2000
    values.append(
        {
            "id": "public-ref",
            "prompt": "with a public reference",
            "image_urls": ["https://example.com/ref.png"],
        }
    )
    valid["public-ref"] = "with a public reference"
    values.append(
        {
            "id": "callback-ignored",
            "prompt": "a callback column is not forwarded",
            "callback_url": "http://127.0.0.1:9/hook",
        }
    )
    valid["callback-ignored"] = "a callback column is not forwarded"
    values.append({"id": 7, "prompt": "a numeric id is text"})
    valid["7"] = "a numeric id is text"
    for record, words in INVALID_RECORDS:
        values.append(record)
        invalid[len(values)] = words
    for index, url in enumerate(INTERNAL_URLS):
        values.append(
            {"id": f"internal-{index}", "prompt": f"internal {index}", "image_urls": [url]}
        )
        invalid[len(values)] = "is not allowed"
    for index, url in enumerate(NON_HTTP_URLS):
        values.append({"id": f"scheme-{index}", "prompt": f"scheme {index}", "image_urls": [url]})
        # A file:// URL is a local reference image: refused without a reference store (issue 15).
        invalid[len(values)] = "reference_store" if url.startswith("file:") else "must use https or http"
    return values, valid, invalid


async def test_hostile_rows_stay_inside_the_output_and_valid_rows_succeed(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    values, valid, invalid = _hostile_rows()
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    dataset = work / "rows.jsonl"
    dataset.write_text(
        "".join((v if isinstance(v, str) else json.dumps(v)) + "\n" for v in values),
        encoding="utf-8",
    )
    output = work / "out"
    parent_before = sorted(os.listdir(tmp_path.parent))
    before = tree(tmp_path)

    state = await run_dataset(dataset, output, max_concurrency=16, retries=0)
    summary = await summary_of(state)

    # Nothing outside the output folder: not beside it, not above it, not at absolute paths.
    new = tree(tmp_path) - before
    outside = {p for p in new if not (p == "deep/er/out" or p.startswith("deep/er/out/"))}
    assert outside == set()
    assert sorted(os.listdir(tmp_path.parent)) == parent_before
    assert not Path("/abs").exists()
    assert not list(Path("/tmp").glob(f"{ESCAPE}*")) and not list(Path("/etc").glob("x-*"))
    real_out = os.path.realpath(output)
    for path in output.rglob("*"):
        assert os.path.realpath(path).startswith(real_out + os.sep), path
        assert not path.is_symlink()

    # One line per input row, in order.
    lines = manifest(output)
    assert [line["row_number"] for line in lines] == list(range(1, len(values) + 1))
    by_number = {line["row_number"]: line for line in lines}

    # Every valid row succeeded, each with its own image file directly in the output.
    stats = seedream_env.stats()
    images: set[Path] = set()
    for line in lines:
        if line["row_number"] in invalid:
            continue
        assert line["status"] == "succeeded", line
        assert line["row_id"] in valid
        assert stats["submissions_by_prompt"].get(line["prompt"]) == 1
        uri = Path(line["images"][0]["uri"])
        assert uri.parent == output.resolve() and uri.is_file()
        images.add(uri)
    assert len(images) == len(valid)
    assert stats["tasks_created"] == len(valid)
    assert (
        "callback_url"
        not in by_number[
            next(n for n, l in by_number.items() if l["row_id"] == "callback-ignored")
        ]["parameters"]
    )

    # Every invalid row failed with its reason and submitted nothing.
    for number, words in invalid.items():
        line = by_number[number]
        assert line["status"] == "failed", line
        assert line["error"]["code"] == "invalid_row"
        assert words in line["error"]["message"], (words, line["error"])
        assert line["task_id"] is None and line["submissions"] == 0
        if isinstance(line["prompt"], str):
            assert line["prompt"] not in stats["submissions_by_prompt"]
    for number in invalid:
        if number <= len(values) and isinstance(values[number - 1], dict):
            url_list = values[number - 1].get("image_urls")
            if isinstance(url_list, list) and url_list and isinstance(url_list[0], str):
                assert url_list[0][:60] in by_number[number]["error"]["message"]

    # Ledger files too are named safely, inside the output.
    ledger = output / ".seedream" / "tasks"
    assert len(list(ledger.glob("*.json"))) == len(valid)

    assert summary.rows == len(values)
    assert summary.succeeded == len(valid)
    assert summary.failed == summary.invalid == len(invalid)
    assert state.is_failed()


async def test_long_ids_sharing_a_prefix_get_distinct_files(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    ids = ["z" * 100 + "-one", "z" * 100 + "-two", "z" * 80, "z" * 80 + "/"]
    rows = [{"id": row_id, "prompt": f"a kite {i}"} for i, row_id in enumerate(ids)]
    output = tmp_path / "out"
    state = await run_dataset(write_jsonl(tmp_path / "rows.jsonl", rows), output)
    lines = manifest(output)

    assert state.is_completed(), state
    uris = [line["images"][0]["uri"] for line in lines]
    assert len(set(uris)) == len(ids)
    for uri in uris:
        assert Path(uri).parent == output.resolve()
        assert len(Path(uri).name) < 255


async def test_csv_ragged_rows_and_quoted_newlines(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    dataset = tmp_path / "rows.csv"
    dataset.write_text(
        "id,prompt\n"
        'ok,"a lantern\non two lines"\n'
        "ragged,a kite,extra,fields\n"
        '../../x,"a boat, with a comma"\n',
        encoding="utf-8",
    )
    output = tmp_path / "out"
    await run_dataset(dataset, output)
    lines = {line["row_number"]: line for line in manifest(output)}

    assert len(lines) == 3
    assert lines[1]["status"] == "succeeded" and lines[1]["prompt"] == "a lantern\non two lines"
    assert lines[2]["status"] == "failed" and lines[2]["error"]["code"] == "invalid_row"
    assert "4 fields, header has 2" in lines[2]["error"]["message"]
    assert lines[3]["status"] == "succeeded"
    assert Path(lines[3]["images"][0]["uri"]).parent == output.resolve()
    assert seedream_env.stats()["tasks_created"] == 2


# -- bad files: a clear DatasetError before any submission -----------------------------------


async def _expect_dataset_error(
    sim: RunningSimulator, dataset: Path, output: Path, words: str
) -> None:
    state = await run_dataset(dataset, output)
    assert state.is_failed(), state
    error = await state.aresult(raise_on_failure=False)
    assert isinstance(error, DatasetError), error
    assert words in str(error)
    assert words in (state.message or "")
    stats = sim.stats()
    assert stats["submit_requests"] == 0 and stats["tasks_created"] == 0
    assert not (output / "manifest.jsonl").exists()


async def test_csv_without_a_prompt_column(seedream_env: RunningSimulator, tmp_path: Path) -> None:
    dataset = write_csv(
        tmp_path / "rows.csv", [{"id": "a", "text": "a lantern"}, {"id": "b", "text": "a kite"}]
    )
    await _expect_dataset_error(seedream_env, dataset, tmp_path / "out", "no 'prompt' column")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.csv", b""),
        ("empty.jsonl", b""),
        ("header-only.csv", b"id,prompt\n"),
        ("blank-lines.jsonl", b"\n\n   \n"),
    ],
)
async def test_empty_dataset(
    seedream_env: RunningSimulator, tmp_path: Path, name: str, content: bytes
) -> None:
    dataset = tmp_path / name
    dataset.write_bytes(content)
    await _expect_dataset_error(seedream_env, dataset, tmp_path / "out", "has no rows")


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
async def test_non_utf8_file(seedream_env: RunningSimulator, tmp_path: Path, suffix: str) -> None:
    dataset = tmp_path / f"latin1.{suffix}"
    if suffix == "csv":
        dataset.write_bytes("id,prompt\nr1,un caf\u00e9 au lait\n".encode("latin-1"))
    else:
        dataset.write_bytes('{"id": "r1", "prompt": "un caf\u00e9"}\n'.encode("latin-1"))
    await _expect_dataset_error(seedream_env, dataset, tmp_path / "out", "is not UTF-8")


async def test_non_utf8_byte_late_in_a_big_file_still_submits_nothing(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    """Validation reads the whole file before the first submission."""
    good = "".join(
        json.dumps({"id": f"r{i}", "prompt": f"a lantern {i}"}) + "\n" for i in range(3000)
    )
    dataset = tmp_path / "late.jsonl"
    dataset.write_bytes(good.encode() + b'{"id": "bad", "prompt": "caf\xe9"}\n')
    await _expect_dataset_error(seedream_env, dataset, tmp_path / "out", "is not UTF-8")


@pytest.mark.parametrize(
    ("name", "words"), [("rows.txt", "unknown format"), ("missing.csv", "does not exist")]
)
async def test_unreadable_dataset_path(
    seedream_env: RunningSimulator, tmp_path: Path, name: str, words: str
) -> None:
    dataset = tmp_path / name
    if name.endswith(".txt"):
        dataset.write_text("prompt\na lantern\n")
    await _expect_dataset_error(seedream_env, dataset, tmp_path / "out", words)


# -- one hostile row must not sink the whole dataset -------------------------------------------

ROW_KILLERS = {
    # a prompt longer than the csv module's default field limit (131072 characters)
    "csv-huge-field.csv": "id,prompt\ngood,a paper lantern\nhuge," + "p" * 200_000 + "\n",
    # 100000 nested arrays: json.loads raises RecursionError, not JSONDecodeError
    "jsonl-deep.jsonl": '{"id": "good", "prompt": "a paper lantern"}\n'
    + '{"id": "huge", "prompt": '
    + "[" * 100_000
    + "]" * 100_000
    + "}\n",
    # a 5000-digit number: json.loads raises ValueError (int max str digits), not JSONDecodeError
    "jsonl-big-int.jsonl": '{"id": "good", "prompt": "a paper lantern"}\n'
    + '{"id": "huge", "prompt": "a kite", "n": '
    + "9" * 5000
    + "}\n",
}


@pytest.mark.parametrize("name", sorted(ROW_KILLERS))
async def test_one_hostile_line_is_an_invalid_row_not_a_failed_run(
    seedream_env: RunningSimulator, tmp_path: Path, name: str
) -> None:
    """(Found as a bug: these lines raised a raw _csv.Error / RecursionError / ValueError
    out of read_records and failed the whole run; fixed in dataset.py.)"""
    dataset = tmp_path / name
    dataset.write_text(ROW_KILLERS[name], encoding="utf-8")
    output = tmp_path / "out"
    state = await run_dataset(dataset, output)

    assert (output / "manifest.jsonl").exists(), f"the run failed: {state.message}"
    lines = {line["row_number"]: line for line in manifest(output)}
    assert sorted(lines) == [1, 2]
    assert lines[1]["row_id"] == "good" and lines[1]["status"] == "succeeded"
    bad = lines[2]
    assert bad["status"] == "failed" and bad["error"]["code"] == "invalid_row", bad
    assert "cannot be read" in bad["error"]["message"] or "characters" in bad["error"]["message"]
    assert len(bad["error"]["message"]) < 500  # the reason, not the hostile value
    assert bad["task_id"] is None
    assert seedream_env.stats()["tasks_created"] == 1
    assert state.is_failed() and "1 of 2 rows succeeded" in (state.message or "")


async def test_an_id_spelled_like_another_ids_sanitised_form_gets_its_own_file(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    import hashlib

    first = "x y"
    twin = "x_y-" + hashlib.sha256(first.encode()).hexdigest()[:8]
    rows = [{"id": first, "prompt": "a red lantern"}, {"id": twin, "prompt": "a blue kite"}]
    output = tmp_path / "out"
    state = await run_dataset(write_jsonl(tmp_path / "rows.jsonl", rows), output)
    lines = {line["row_id"]: line for line in manifest(output)}

    assert state.is_completed(), state
    assert seedream_env.stats()["tasks_created"] == 2
    uris = {row_id: line["images"][0]["uri"] for row_id, line in lines.items()}
    assert uris[first] != uris[twin], f"both rows point at {uris[first]}"


async def test_a_folder_given_as_the_dataset(
    seedream_env: RunningSimulator, tmp_path: Path
) -> None:
    folder = tmp_path / "prompts.csv"
    folder.mkdir()
    await _expect_dataset_error(seedream_env, folder, tmp_path / "out", "prompts.csv")
