"""assay serve end to end: a real uvicorn server on loopback over a real registry.

What must hold: answers match the model; bad requests get a 4xx that says what is wrong and the server
goes on; a promotion and a rollback under continuous load lose no request; unshifted traffic raises no
incident over many windows; a planted shift raises one within a few windows and rolls the alias back; a
crash between the incident and its rollback is finished consistently by the next start.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from assay.release import Workspace, model_of
from assay.serve.service import Service
from tests.integration.serving_fixtures import MODEL, config, make_registry, running, traffic, wait_windows
from tests.unit.tolerances import assert_same_decisions, network_forward

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
URL = f"/v1/models/{MODEL}/predict"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once; each test copies it, so each starts from v2 in production with no incidents."""
    home = tmp_path_factory.mktemp("registry") / "home"
    make_registry(home).store.close()
    return home


@pytest.fixture
def ws(registry: Path, tmp_path: Path) -> Workspace:
    import shutil

    home = tmp_path / "home"
    shutil.copytree(registry, home)
    return Workspace.open(home)


def npy(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, x)
    return buffer.getvalue()


def post(client: httpx.Client, x: np.ndarray) -> httpx.Response:
    return client.post(URL, content=npy(x), headers={"Content-Type": "application/x-npy"})


def production(ws: Workspace) -> int:
    current = ws.store.current_alias(MODEL, "production")
    assert current is not None
    return current.version


def test_answers_are_the_models_own_in_json_and_npy(ws: Workspace) -> None:
    x = traffic(5, seed=10)
    module = model_of(ws, ws.store.resolve(f"{MODEL}@production")).module
    assert module is not None
    ref = network_forward(module, x)  # the server runs the inference copy: any kernel keeps to this bound
    with (
        running(Service(ws, MODEL, "production", config(monitor=False))) as base,
        httpx.Client(base_url=base) as c,
    ):
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/ready").json()["version"] == 2
        answer = c.post(URL, json={"inputs": x.tolist()}).json()
        assert answer["version"] == 2
        picked = np.eye(ref.logits.shape[1])[answer["predictions"]]
        assert_same_decisions(ref.logits, ref.logits_bound, picked, max_undecided=0.2)
        np.testing.assert_allclose(np.sum(answer["probabilities"], axis=1), 1.0, atol=1e-5)
        single = c.post(URL, json={"inputs": x[0].tolist()}).json()  # one example, no batch dimension
        assert single["predictions"] == answer["predictions"][:1]
        binary = c.post(
            URL, content=npy(x), headers={"Content-Type": "application/x-npy", "Accept": "application/x-npy"}
        )
        assert binary.headers["X-Assay-Version"] == "2"
        probs = np.load(io.BytesIO(binary.content))
        np.testing.assert_allclose(probs, np.asarray(answer["probabilities"]), atol=1e-5)
        report = c.get("/runs/2/report")  # the gate report of v2, linked from the dashboard
        assert report.status_code == 200 and "<section" in report.text
        assert c.get("/runs/99/report").status_code == 404
        metrics = c.get("/metrics").text
        assert 'assay_requests_total{code="200"} 3.0' in metrics
        assert "assay_served_version 2.0" in metrics


def test_bad_requests_get_a_4xx_that_says_what_is_wrong_and_the_server_goes_on(ws: Workspace) -> None:
    x = traffic(2, seed=11)
    nan = x.copy()
    nan[0, 0, 0, 0] = np.nan
    cases = [
        (dict(content=b'{"inputs": [1', headers={"Content-Type": "application/json"}), 400, "not valid JSON"),
        (dict(json={"inputs": [[1.0, 2.0]]}), 422, "must have shape (n, 1, 12, 12)"),
        (dict(json={"inputs": [["a"] * 12] * 12}), 422, "must hold numbers"),
        (dict(json={"inputs": [[1.0], [1.0, 2.0]]}), 422, "rectangular"),
        (dict(json={"data": []}), 422, '"inputs"'),
        (dict(content=b'{"inputs": [NaN]}', headers={"Content-Type": "application/json"}), 422, None),
        (dict(content=npy(nan), headers={"Content-Type": "application/x-npy"}), 422, "NaN or infinite"),
        (dict(content=npy(np.array([{"a": 1}], dtype=object)),
              headers={"Content-Type": "application/x-npy"}), 400, "not a readable .npy"),
        (dict(content=b"x" * 10000, headers={"Content-Type": "application/json"}), 413, "at most 8192"),
        (dict(content=b"inputs", headers={"Content-Type": "text/plain"}), 415, "Send JSON"),
        (dict(json={"inputs": x.tolist(), "labels": [0]}), 422, "'labels' must be 2 integer"),
        (dict(json={"inputs": x.tolist(), "labels": [0, 7]}), 422, "class indices in [0, 2]"),
    ]  # fmt: skip
    service = Service(ws, MODEL, "production", config(monitor=False, max_body_bytes=8192))
    with running(service) as base, httpx.Client(base_url=base) as c:
        for kwargs, status, text in cases:
            response = c.post(URL, **kwargs)  # type: ignore[arg-type]
            assert response.status_code == status, (kwargs, response.text)
            message = response.json()["error"]["message"]
            if text is not None:
                assert text in message, message
        wrong_method = c.get(URL)
        assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
        assert "POST" in wrong_method.json()["error"]["message"]
        unknown = c.post("/v1/models/other/predict", json={"inputs": x.tolist()})
        assert unknown.status_code == 404 and "serves 'bars'" in unknown.json()["error"]["message"]
        assert c.post(URL, json={"inputs": x.tolist()}).status_code == 200  # still serving


def _hammer(
    base: str, stop: threading.Event, outcomes: Counter[str], versions: Counter[int], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    with httpx.Client(base_url=base, timeout=30) as c:
        while not stop.is_set():
            x = traffic(int(rng.integers(1, 6)), seed=int(rng.integers(1 << 30)))
            try:
                r = post(c, x)
            except httpx.HTTPError as e:  # a dropped connection is a lost request
                outcomes[f"lost: {type(e).__name__}"] += 1
                continue
            outcomes[str(r.status_code)] += 1
            if r.status_code == 200:
                versions[r.json()["version"]] += 1


def test_a_promotion_and_a_rollback_under_continuous_load_lose_no_request(ws: Workspace) -> None:
    outcomes: Counter[str] = Counter()
    versions: Counter[int] = Counter()
    stop = threading.Event()
    service = Service(ws, MODEL, "production", config(monitor=False, max_queue=64, max_batch=16))
    with running(service) as base:
        clients = [
            threading.Thread(target=_hammer, args=(base, stop, outcomes, versions, s)) for s in range(4)
        ]
        for t in clients:
            t.start()

        def wait_for(version: int) -> None:
            deadline = time.monotonic() + 30
            while service.served.version.version != version:
                assert time.monotonic() < deadline, f"the server never switched to v{version}"
                time.sleep(0.02)
            time.sleep(0.3)  # keep the load on for a while after the swap

        time.sleep(0.3)
        ws.store.rollback(MODEL, "production", reason="test")
        wait_for(1)
        ws.store.promote(f"{MODEL}@v2", force=True, reason="test")
        wait_for(2)
        stop.set()
        for t in clients:
            t.join()
    assert set(outcomes) <= {"200", "503"}, outcomes
    assert outcomes["200"] > 50
    assert versions[1] > 0 and versions[2] > 0  # both versions answered during the run


def _send(base: str, windows: int, window: int, shift: str | None, seed: int) -> None:
    with httpx.Client(base_url=base, timeout=30) as c:
        for i in range(windows):
            assert post(c, traffic(window, seed=seed + i, shift=shift)).status_code == 200


def test_unshifted_traffic_raises_no_incident_and_a_planted_shift_rolls_back(ws: Workspace) -> None:
    service = Service(ws, MODEL, "production", config(window=100, rollback_after=2))
    with running(service) as base:
        _send(base, windows=30, window=100, shift=None, seed=1000)  # 30 windows of clean traffic
        wait_windows(service, 30)
        assert ws.store.list_incidents(MODEL) == []
        _send(base, windows=4, window=100, shift="contrast", seed=5000)
        wait_windows(service, 34)
        deadline = time.monotonic() + 30
        while service.served.version.version != 1:
            assert time.monotonic() < deadline, "no rollback"
            time.sleep(0.05)
    incidents = ws.store.list_incidents(MODEL)
    assert len(incidents) >= 1
    first = incidents[0]
    assert first.window in (30, 31, 32)  # within three windows of the shift
    assert first.action == "rolled_back" and first.version == 2
    assert first.rollback_event is not None and first.rollback_event.to_version == 1
    assert production(ws) == 1
    assert ws.store.alias_history(MODEL, "production")[-1].action == "rollback"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the simulated death
def test_a_crash_between_incident_and_rollback_is_finished_by_the_next_start(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assay.store import Store

    crashed = threading.Event()

    def die(self: Store, incident_id: int, **kwargs: object) -> None:
        crashed.set()
        raise SystemExit("killed")  # the process dies after the due incident was written

    monkeypatch.setattr(Store, "rollback_incident", die)
    service = Service(ws, MODEL, "production", config(window=100, rollback_after=1))
    with running(service) as base:
        _send(base, windows=3, window=100, shift="noise", seed=7000)
        deadline = time.monotonic() + 30
        while not crashed.is_set():
            assert time.monotonic() < deadline
            time.sleep(0.02)
    due = ws.store.list_incidents(MODEL, due_only=True)
    assert len(due) == 1 and production(ws) == 2  # decided and durable, not carried out
    monkeypatch.undo()

    restarted = Service(Workspace.open(ws.store.home), MODEL, "production", config(window=100))
    restarted.load()  # what a restart does first
    incident = ws.store.get_incident(due[0].id)
    assert incident.action == "rolled_back"
    assert production(ws) == 1 and restarted.served.version.version == 1
    assert ws.store.list_incidents(MODEL, due_only=True) == []
    history = ws.store.alias_history(MODEL, "production")
    assert [e.action for e in history].count("rollback") == 1
    assert incident.rollback_event is not None and history[-1].id == incident.rollback_event.id


def test_the_webhook_gets_the_incident(ws: Workspace) -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    service = Service(ws, MODEL, "production", config(window=100, rollback_after=None, webhook=url))
    with running(service) as base:
        _send(base, windows=2, window=100, shift="contrast", seed=9000)
        deadline = time.monotonic() + 30
        while not received:
            assert time.monotonic() < deadline, "no webhook call"
            time.sleep(0.02)
    hook.shutdown()
    assert received[0]["event"] == "incident"
    assert received[0]["incident"]["model"] == MODEL  # type: ignore[index]


def test_shadow_mode_runs_the_parent_and_tracks_agreement(ws: Workspace) -> None:
    from assay.release import data_for, evaluate_target, train_version
    from assay.train import TrainConfig
    from tests.integration.serving_fixtures import TINY

    parent = ws.store.resolve(f"{MODEL}@v2")
    data, spec = data_for(parent)
    train = TrainConfig(epochs=3, batch_size=32, precision="fp32", seed=5)
    child, _ = train_version(
        ws,
        MODEL,
        data,
        spec,
        arch="cnn",
        config=train,
        spec_overrides=TINY,
        parent=parent.ref,
        progress=False,
    )
    evaluate_target(ws, child.ref, efficiency=False)
    ws.store.promote(child.ref, "shadowed")
    service = Service(ws, MODEL, "shadowed", config(window=100, shadow_rate=1.0, rollback_after=None))
    with running(service) as base:
        assert service.served.shadow is not None
        expected = service.served.monitor.reference.agreement  # type: ignore[union-attr]
        _send(base, windows=5, window=100, shift=None, seed=4000)
        wait_windows(service, 5)
        windows = service.served.monitor.recent()  # type: ignore[union-attr]
    assert expected is not None and 0.5 < expected <= 1.0
    for window in windows:
        assert window.summary["n_shadow"] == 100
        assert abs(window.summary["agreement"] - expected) < 0.15
        assert "agreement" in {r.name for r in window.results}


FEEDBACK = f"/v1/models/{MODEL}/feedback"


def test_feedback_labels_an_earlier_answer_once_by_its_request_id(ws: Workspace) -> None:
    service = Service(ws, MODEL, "production", config(feedback_examples=50, max_body_bytes=2**15))
    with running(service) as base, httpx.Client(base_url=base) as c:
        answered = c.post(URL, json={"inputs": traffic(3, seed=20).tolist()})
        request_id = answered.json()["request_id"]
        assert answered.headers["X-Assay-Request-Id"] == request_id
        binary = c.post(
            URL,
            content=npy(traffic(2, seed=21)),
            headers={"Content-Type": "application/x-npy", "Accept": "application/x-npy"},
        )
        ids = [request_id, binary.headers["X-Assay-Request-Id"]]
        ids += [post(c, traffic(1, seed=22 + i)).headers["X-Assay-Request-Id"] for i in range(5)]
        assert len(set(ids)) == len(ids) == 7

        labels = answered.json()["predictions"]
        refusals = [
            ({"request_id": request_id, "labels": labels[:2]}, 422, "must be 3 integer class indices"),
            ({"request_id": request_id, "labels": [0, 1, 7]}, 422, "class indices in [0, 2]"),
            ({"request_id": request_id, "labels": [0.5, 1, 2]}, 422, "integer class indices"),
            ({"labels": labels}, 422, '"request_id"'),
            ({"request_id": "0123456789ab-0", "labels": labels}, 404, "last 50 examples"),
        ]  # fmt: skip
        for body, status, text in refusals:
            r = c.post(FEEDBACK, json=body)
            assert r.status_code == status and text in r.json()["error"]["message"], (body, r.text)
        raw = [
            (dict(content=b'{"request_id": ', headers={"Content-Type": "application/json"}), 400),
            (dict(content=b"x", headers={"Content-Type": "text/plain"}), 415),
            (dict(content=b"x" * 2**16, headers={"Content-Type": "application/json"}), 413),
        ]
        for kwargs, status in raw:
            assert c.post(FEEDBACK, **kwargs).status_code == status  # type: ignore[arg-type]
        other = c.post("/v1/models/other/feedback", json={"request_id": request_id, "labels": labels})
        assert other.status_code == 404 and "serves 'bars'" in other.json()["error"]["message"]
        assert c.get(FEEDBACK).status_code == 405

        ok = c.post(FEEDBACK, json={"request_id": request_id, "labels": labels})
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"request_id": request_id, "labelled": 3, "monitored": True}
        again = c.post(FEEDBACK, json={"request_id": request_id, "labels": labels})
        assert again.status_code == 409 and "labelled already" in again.json()["error"]["message"]
        with_labels = c.post(URL, json={"inputs": traffic(1, seed=30).tolist(), "labels": [0]}).json()
        assert (
            c.post(FEEDBACK, json={"request_id": with_labels["request_id"], "labels": [0]}).status_code == 409
        )

        # 50 examples kept: after 10 more answers of 5, the answer of 2 examples (ids[1]) is evicted
        for i in range(10):
            assert post(c, traffic(5, seed=40 + i)).status_code == 200
        gone = c.post(FEEDBACK, json={"request_id": ids[1], "labels": [0, 0]})
        assert (
            gone.status_code == 404 and "older than the last 50 examples" in gone.json()["error"]["message"]
        )
        latest = post(c, traffic(5, seed=50)).headers["X-Assay-Request-Id"]
        assert c.post(FEEDBACK, json={"request_id": latest, "labels": [0] * 5}).status_code == 200


def _labelled(base: str, windows: int, seed: int, wrong: bool) -> None:
    """Send ``windows`` windows of 100 examples, then for each answer its true labels, or labels the model
    did not predict."""
    from tests.conftest import make_bars

    with httpx.Client(base_url=base, timeout=30) as c:
        for i in range(windows):
            x, y = make_bars(np.random.default_rng(seed + i), 100)
            answer = post(c, x[:, None]).json()
            labels = (np.asarray(answer["predictions"]) + 1) % 3 if wrong else y
            r = c.post(FEEDBACK, json={"request_id": answer["request_id"], "labels": labels.tolist()})
            assert r.status_code == 200 and r.json()["monitored"], r.text


def test_an_accuracy_drop_seen_through_feedback_rolls_back(ws: Workspace) -> None:
    service = Service(ws, MODEL, "production", config(window=100, rollback_after=2))
    with running(service) as base, httpx.Client(base_url=base) as c:
        _labelled(base, windows=3, seed=6000, wrong=False)
        wait_windows(service, 6)  # three traffic and three feedback windows
        assert ws.store.list_incidents(MODEL) == []
        unlabelled = post(c, traffic(1, seed=6050)).json()["request_id"]  # answered by v2
        _labelled(base, windows=2, seed=6100, wrong=True)
        deadline = time.monotonic() + 30
        while service.served.version.version != 1:
            assert time.monotonic() < deadline, "no rollback"
            time.sleep(0.05)
        late = c.post(FEEDBACK, json={"request_id": unlabelled, "labels": [0]})
    (incident,) = ws.store.list_incidents(MODEL)
    assert (incident.detector, incident.window, incident.detections) == ("accuracy", 3, 2)
    assert [d["stream"] for d in incident.details["detections"]] == ["feedback", "feedback"]
    assert incident.action == "rolled_back" and production(ws) == 1
    # accepted, but v1's monitor does not take the labels of v2's answer
    assert late.status_code == 200 and late.json()["monitored"] is False


def test_a_capped_monitor_observes_its_budget_and_counts_the_rest(ws: Workspace) -> None:
    """At 6 windows of 100 a minute (10 examples a second, a burst of one window), a quick burst of 500
    examples is monitored only in part; every example is either observed or counted as skipped."""
    service = Service(ws, MODEL, "production", config(window=100, max_windows_per_minute=6))
    with running(service) as base:
        start = time.monotonic()
        with httpx.Client(base_url=base, timeout=30) as c:
            for i in range(5):
                assert post(c, traffic(100, seed=7000 + i)).status_code == 200
        elapsed = time.monotonic() - start
    registry = service.metrics.registry
    skipped = registry.get_sample_value("assay_monitor_skipped_examples_total") or 0
    observed = service.served.monitor.rows_seen if service.served.monitor else 0
    assert observed + skipped == 500
    assert 100 <= observed <= 100 + 10 * elapsed + 100  # the burst, the refill, one batch's overdraft
    assert (registry.get_sample_value("assay_monitor_seconds_total") or 0) > 0
    assert (registry.get_sample_value("assay_forward_seconds_total") or 0) > 0


def test_under_a_budget_a_planted_shift_still_raises_an_incident_within_a_few_windows(ws: Workspace) -> None:
    """60 windows of 100 a minute: shifted traffic sent faster than that is partly skipped (the test
    above counts it), and the windows that are monitored still catch the shift within three."""
    service = Service(
        ws, MODEL, "production", config(window=100, max_windows_per_minute=60, rollback_after=None)
    )
    with running(service) as base, httpx.Client(base_url=base, timeout=30) as c:
        deadline = time.monotonic() + 60
        seed = 9000
        while not ws.store.list_incidents(MODEL):
            assert time.monotonic() < deadline, "the shift raised no incident"
            assert post(c, traffic(50, seed=seed, shift="contrast")).status_code == 200
            seed += 1
    first = ws.store.list_incidents(MODEL)[0]
    assert first.window <= 2  # the first, second or third monitored window
