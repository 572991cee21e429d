"""Server-side data sets (``POST /v1/jobs`` ``dataset.path``): only files under the configured
data root, bounded reads, and errors that show neither the file's contents nor anything about
paths outside the root. Through the real app over a real Redis (its own key prefix)."""

from __future__ import annotations

import json
import os
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mindgap.config import RewriterSettings, ServiceSettings
from mindgap.queue import Queue
from mindgap.rewriter.app import create_app

SECRET = "TOP-SECRET-7f3a"
"""Written into files the client must never read back."""

Client = Callable[..., TestClient]


def row(i: int, **changes: Any) -> dict[str, Any]:
    return {"id": f"p{i}", "question": f"What is {i} + {i}?",
            "solution": f"{i} + {i} = {2 * i}. \\boxed{{{2 * i}}}", **changes}


def write_rows(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A readable file outside the root, holding the secret."""
    return write_rows(tmp_path / "private" / "secret.jsonl", [row(0, question=SECRET)])


@pytest.fixture
def client(queue: Queue) -> Iterator[Client]:
    """Build a TestClient of the rewriter app with these settings, on the test's prefix."""
    opened: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        app = create_app(queue, RewriterSettings(**settings), ServiceSettings(api_key=None))
        opened.append(TestClient(app))
        return opened[-1]

    yield make
    for test_client in opened:
        test_client.close()


def post(client: TestClient, path: str, **spec: Any) -> Any:
    return client.post("/v1/jobs", json={"dataset": {"path": path, **spec},
                                         "feed_trainer": False})


def test_no_data_root_refuses_server_side_datasets(client: Client, root: Path) -> None:
    good = write_rows(root / "good.jsonl", [row(0)])
    reply = post(client(), str(good))
    assert reply.status_code == 403, reply.text
    assert "MINDGAP_REWRITER_DATA_ROOT" in reply.json()["detail"]
    inline = client().post("/v1/jobs", json={"items": [row(0)]})
    assert inline.status_code == 202, inline.text  # inline items need no data root


def test_relative_paths_are_under_the_root(client: Client, root: Path) -> None:
    write_rows(root / "sub" / "good.jsonl", [row(i) for i in range(3)])
    (root / "latest.jsonl").symlink_to(root / "sub" / "good.jsonl")  # a link inside: fine
    app = client(data_root=root)
    for path in ("sub/good.jsonl", "./sub/../sub/good.jsonl", str(root / "sub/good.jsonl"),
                 "latest.jsonl"):
        reply = post(app, path)
        assert reply.status_code == 202, (path, reply.text)
        assert reply.json()["total"] == 3
    job = app.get(f"/v1/jobs/{reply.json()['job_id']}")
    assert job.status_code == 200


def test_paths_outside_the_root_all_get_one_answer(client: Client, root: Path,
                                                   outside: Path) -> None:
    (root / "link.jsonl").symlink_to(outside)
    (root / "dangling.jsonl").symlink_to(outside.parent / "absent.jsonl")
    (root / "dir-link").symlink_to(outside.parent, target_is_directory=True)
    (root / "zero.jsonl").symlink_to("/dev/zero")
    relative = os.path.relpath(outside, root)
    app = client(data_root=root)
    attempts = [str(outside), relative, str(outside.parent / "absent.jsonl"),
                os.path.relpath(outside.parent / "absent.jsonl", root), "link.jsonl",
                "dangling.jsonl", "dir-link/secret.jsonl", "dir-link/absent.jsonl",
                "zero.jsonl", "/etc/passwd", "../../../../../../etc/passwd",
                "missing.jsonl", "sub/missing.jsonl"]
    answers = set()
    for path in attempts:
        reply = post(app, path)
        assert SECRET not in reply.text and "private" not in reply.text.replace(path, "")
        assert str(root) not in reply.text.replace(path, "")
        answers.add((reply.status_code, reply.text.replace(json.dumps(path)[1:-1], "PATH")))
    assert len(answers) == 1, answers
    ((status, text),) = answers
    assert status == 422 and json.loads(text)["errors"][0]["field"] == "dataset.path"


def test_only_regular_files_or_save_to_disk_folders(client: Client, root: Path) -> None:
    os.mkfifo(root / "pipe.jsonl")  # reading it would block forever
    (root / "plain").mkdir()
    app = client(data_root=root)
    fifo = post(app, "pipe.jsonl")
    assert fifo.status_code == 422 and "not a regular file" in fifo.json()["detail"]
    folder = post(app, "plain")
    assert folder.status_code == 422 and "save_to_disk" in folder.json()["detail"]
    whole = post(app, ".")
    assert whole.status_code == 422 and "save_to_disk" in whole.json()["detail"]


def test_a_data_set_over_the_size_cap_is_413(client: Client, root: Path) -> None:
    write_rows(root / "big.jsonl", [row(i) for i in range(20)])
    reply = post(client(data_root=root, max_dataset_bytes=500), "big.jsonl")
    assert reply.status_code == 413, reply.text
    assert "500 bytes" in reply.json()["detail"]


def peak_bytes(call: Callable[[], Any]) -> tuple[Any, int]:
    """What ``call`` returns and the peak of Python allocations while it ran."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_reading_stops_at_the_row_cap(client: Client, root: Path) -> None:
    path = root / "many.jsonl"
    line = json.dumps(row(0)) + "\n"
    path.write_text(line * 200_000)  # ~17 MB
    app = client(data_root=root, max_job_items=10)
    reply, peak = peak_bytes(lambda: post(app, "many.jsonl"))
    assert reply.status_code == 413, reply.text
    assert "10" in reply.json()["detail"]
    assert peak < 4 * 1024 * 1024, peak


def test_a_huge_line_is_not_read_into_memory(client: Client, root: Path) -> None:
    path = root / "one-line.jsonl"
    with path.open("wb") as handle:
        handle.write(b'{"id": "a", "question": "')
        for _ in range(64):
            handle.write(b"x" * (1024 * 1024))
        handle.write(b'", "solution": "\\\\boxed{1}"}\n')
    app = client(data_root=root)
    reply, peak = peak_bytes(lambda: post(app, "one-line.jsonl"))
    assert reply.status_code == 422, reply.text[:300]
    (error,) = reply.json()["errors"]
    assert error["line"] == 1 and "longer than" in error["message"]
    assert peak < 24 * 1024 * 1024, peak


def test_errors_name_lines_and_fields_never_values(client: Client, root: Path) -> None:
    write_rows(root / "bad.jsonl", [
        row(0, id=SECRET),
        row(1, id=SECRET),                                      # duplicate id
        row(2, question=[SECRET]),                              # wrong type
        '{"id": "x", "question": "' + SECRET + '", oops}',      # invalid JSON
        row(4, solution=f"{SECRET} without an answer"),          # no reference answer
        row(5, metadata=SECRET),                                # metadata not an object
        {"id": "y", "question": SECRET},                        # solution missing
    ])
    reply = post(client(data_root=root), "bad.jsonl")
    assert reply.status_code == 422
    assert SECRET not in reply.text
    body = reply.json()
    assert [e["line"] for e in body["errors"]] == [2, 3, 4, 5, 6, 7]
    assert "field 'id': duplicate" in body["errors"][0]["message"]
    assert "bad.jsonl:2:" in body["detail"]


def test_save_to_disk_folder_under_the_root(client: Client, root: Path, outside: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([row(i) for i in range(4)]).save_to_disk(str(root / "hf"))
    app = client(data_root=root)
    ok = post(app, "hf")
    assert ok.status_code == 202, ok.text
    assert ok.json()["total"] == 4

    datasets.Dataset.from_list([row(0, question=SECRET)]).save_to_disk(
        str(outside.parent / "hf-private"))
    state_path = root / "hf" / "state.json"
    state = json.loads(state_path.read_text())
    arrow = state["_data_files"][0]["filename"]
    escaped = os.path.relpath(outside.parent / "hf-private" / arrow, root / "hf")
    state_path.write_text(json.dumps({**state, "_data_files": [{"filename": escaped}]}))
    sneaky = post(app, "hf")
    assert sneaky.status_code == 422 and SECRET not in sneaky.text
    assert "private" not in sneaky.text

    state_path.write_text(json.dumps(state))
    (root / "hf" / arrow).unlink()
    (root / "hf" / arrow).symlink_to(outside.parent / "hf-private" / arrow)
    linked = post(app, "hf")
    assert linked.status_code == 422 and SECRET not in linked.text
