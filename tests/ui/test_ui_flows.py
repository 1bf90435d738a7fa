"""The flows pages over HTTP (a real server on 127.0.0.1): runs newest first with paging
and schedules, a run's graph, tasks and logs, and the resume and cancel actions behind a
confirmation, the CSRF token and --allow-writes; then in chromium (as test_browser.py):
clean pages at both sizes with screenshots, and a resume by clicking."""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from _server import running
from _ui_flows import pipeline, slow
from test_browser import SIZES, Watched

import kiln
from kiln.flows import FlowFailed
from kiln.ui import UISettings, create_app

HERE = Path(__file__).parent


def _work(tmp_path: Path) -> str:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return str(work)


def _failed_run(tmp_path: Path, note: str = "") -> str:
    work = _work(tmp_path)
    (Path(work) / "fail").touch()
    with pytest.raises(FlowFailed) as info:
        pipeline.run(work=work, n=3, note=note, executor="inline")
    (Path(work) / "fail").unlink()
    return info.value.run_id


def _wait(check: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_runs_page_pages_newest_first_and_shows_schedules(
    tmp_path: Path, serve: Callable[..., httpx.Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(HERE)  # where the flows import from, as `kiln flows run` would
    ids = [pipeline.run(work=_work(tmp_path), n=2, executor="inline").id for _ in range(3)]
    kiln.flows.schedule("_ui_flows:pipeline", "0 3 * * *", {"work": "w"}, name="nightly")
    http = serve(page_size=2)
    first = http.get("/flows")
    assert first.status_code == 200
    shown = re.findall(r'href="/flows/([0-9a-f]{32})"', first.text)
    assert shown == [ids[2], ids[1]]
    assert 'rel="next"' in first.text and "finished" in first.text and "inline" in first.text
    assert "nightly" in first.text and "0 3 * * *" in first.text and "not yet" in first.text
    second = http.get("/flows?page=2")
    assert re.findall(r'href="/flows/([0-9a-f]{32})"', second.text) == [ids[0]]
    assert 'rel="next"' not in second.text and 'rel="prev"' in second.text
    assert "No runs on page 9" in http.get("/flows?page=9").text
    for bad in ("0", "x", "-1"):
        r = http.get("/flows", params={"page": bad})
        assert r.status_code == 400 and "page must be a whole number" in html.unescape(r.text)
    nav = http.get("/").text
    assert 'href="/flows"' in nav and 'href="/features"' in nav


def test_run_page_draws_the_graph_and_shows_tasks_and_logs(
    tmp_path: Path, serve: Callable[..., httpx.Client]
) -> None:
    run_id = _failed_run(tmp_path, note="<script>alert('note')</script>")
    http = serve()
    r = http.get(f"/flows/{run_id}")
    assert r.status_code == 200
    page = r.text
    for task in ("prepare", "square[0]", "square[1]", "square[2]", "combine"):
        assert f">{task}<" in page, task
    # The graph: three boxes (the mapped step's tasks as chips), two edges, by status.
    assert '<svg class="flowgraph"' in page
    assert len(re.findall(r'<g class="node g-(\w+)" data-node="(\w+)"', page)) == 3
    assert re.findall(r'<g class="node g-(\w+)" data-node="(\w+)"', page) == [
        ("finished", "prepare"),
        ("finished", "square"),
        ("failed", "combine"),
    ]
    assert page.count('class="edge"') == 2 and page.count('class="chip g-finished"') == 3
    # Tasks: status, attempts, cache hit; the failure's traceback and the printed log.
    assert "combine failed on purpose" in page and "Traceback (most recent call last)" in page
    assert "&lt;script&gt;alert(&#39;log&#39;)&lt;/script&gt; preparing 3" in page
    assert "&lt;script&gt;alert(&#39;note&#39;)&lt;/script&gt;" in page  # the param
    assert "<script>alert(" not in page
    assert "Resume this run" in page and "Cancel this run" not in page
    one = http.get(f"/flows/{run_id}", params={"task": "prepare"})
    assert one.status_code == 200 and "preparing 3" in one.text
    assert "Traceback" not in one.text  # only that task's logs
    missing = http.get(f"/flows/{run_id}", params={"task": "nope"})
    assert missing.status_code == 404 and "no step" in html.unescape(missing.text)
    unknown = http.get("/flows/0123456789abcdef0123456789abcdef")
    assert unknown.status_code == 404 and "no flow run" in html.unescape(unknown.text)
    assert http.get(f"/flows/{run_id}/explode").status_code == 404
    assert http.get("/flows/0123456789abcdef0123456789abcdef/resume").status_code == 404


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def test_actions_are_refused_without_allow_writes(
    tmp_path: Path, serve: Callable[..., httpx.Client]
) -> None:
    run_id = _failed_run(tmp_path)
    http = serve()
    confirm = http.get(f"/flows/{run_id}/resume")
    assert confirm.status_code == 200 and "--allow-writes" in confirm.text
    assert 'method="post"' not in confirm.text
    token = http.cookies.get("kiln_csrf")
    refused = http.post(f"/flows/{run_id}/resume", data={"csrf": token or ""})
    assert refused.status_code == 403 and "read-only" in refused.text
    assert kiln.flows.get_run(run_id).status == "failed"


def test_resume_from_the_dashboard_runs_the_rest_in_its_own_process(
    tmp_path: Path, serve: Callable[..., httpx.Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(HERE)
    run_id = _failed_run(tmp_path)
    http = serve(allow_writes=True)
    confirm = http.get(f"/flows/{run_id}/resume")
    assert confirm.status_code == 200 and f"kiln flows resume {run_id}" in confirm.text
    token = _csrf(confirm.text)
    for bad in ({}, {"csrf": "x" * 43}):
        refused = http.post(f"/flows/{run_id}/resume", data=bad)
        assert refused.status_code == 403 and "CSRF" in refused.text
    other_site = http.post(
        f"/flows/{run_id}/resume", data={"csrf": token}, headers={"origin": "http://evil.test"}
    )
    assert other_site.status_code == 403
    assert kiln.flows.get_run(run_id).status == "failed"

    done = http.post(f"/flows/{run_id}/resume", data={"csrf": token, "reason": "input fixed"})
    assert done.status_code == 303 and done.headers["location"] == f"/flows/{run_id}"
    _wait(lambda: kiln.flows.get_run(run_id).status == "finished")
    page = http.get(f"/flows/{run_id}").text
    assert "resumed by" in page and "kiln ui at " in page and "input fixed" in page
    assert (
        'data-node="combine"' in page and '<g class="node g-finished" data-node="combine"' in page
    )
    again = http.post(f"/flows/{run_id}/resume", data={"csrf": token})
    assert again.status_code == 400 and "already finished" in again.text
    finished = http.get(f"/flows/{run_id}/resume").text
    assert "nothing to resume" in finished and 'method="post"' not in finished


def test_cancel_from_the_dashboard_stops_a_running_run(
    tmp_path: Path, serve: Callable[..., httpx.Client]
) -> None:
    started: list[str] = []
    outcome: list[BaseException] = []

    def go() -> None:
        try:
            slow.run(steps=40, seconds=0.1, executor="inline", on_start=started.append)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=go)
    thread.start()
    try:
        _wait(lambda: bool(started) and len(kiln.flows.tasks(started[0])) >= 2)
        run_id = started[0]
        http = serve(allow_writes=True)
        page = http.get(f"/flows/{run_id}").text
        assert "Cancel this run" in page and "g-running" in page
        confirm = http.get(f"/flows/{run_id}/cancel")
        token = _csrf(confirm.text)
        assert http.post(f"/flows/{run_id}/cancel", data={"csrf": "no"}).status_code == 403
        done = http.post(f"/flows/{run_id}/cancel", data={"csrf": token})
        assert done.status_code == 303 and done.headers["location"] == f"/flows/{run_id}"
        thread.join(30)
    finally:
        if started:  # never leave the run going when an assertion failed
            kiln.flows.request_cancel(started[0])
        thread.join(30)
    assert outcome and isinstance(outcome[0], FlowFailed) and outcome[0].status == "cancelled"
    page = http.get(f"/flows/{run_id}").text
    assert "cancelled" in page and "cancel asked by" in page and "kiln ui at " in page
    assert "Resume this run" in page
    late = http.post(f"/flows/{run_id}/cancel", data={"csrf": token})
    assert late.status_code == 409 and "only a running run can be cancelled" in late.text


def test_flow_pages_in_a_browser_and_resume_by_clicking(
    browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(HERE)
    run_id = _failed_run(tmp_path, note="<img src=x onerror=alert(1)>")
    with running(create_app(UISettings(allow_writes=True))) as url:
        pages = {
            "flows": "/flows",
            "flow-run": f"/flows/{run_id}",
            "flow-resume": f"/flows/{run_id}/resume",
        }
        for size, (width, height) in SIZES.items():
            context = browser.new_context(viewport={"width": width, "height": height})
            watched = Watched(context.new_page())
            for name, path in pages.items():
                assert watched.visit(url + path, shot=f"{name}-{size}").locator("h1").count()
            context.close()
            assert watched.problems == [] and watched.dialogs == []

        context = browser.new_context()
        watched = Watched(context.new_page())
        page = watched.visit(f"{url}/flows/{run_id}")
        assert page.locator("svg.flowgraph g.node").count() == 3
        page.click("text=Resume this run")
        page.fill("#reason", "clicked in a browser")
        page.click("form.confirm button[type=submit]")
        page.wait_for_url(f"{url}/flows/{run_id}")
        _wait(lambda: kiln.flows.get_run(run_id).status == "finished")
        page.reload()
        assert "clicked in a browser" in page.content()
        context.close()
        assert watched.problems == [] and watched.dialogs == []
