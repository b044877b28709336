"""``python -m elmstate.redis worker ...`` and examples/keyed_counters, run as a user would.

Every test runs the command line as a subprocess against this machine's real
Redis (and SQLite, PostgreSQL or Redis as the store), on a logical stream of
its own (``name:*`` keys deleted afterwards). The program is a hash chain over
each key's messages, so a model is right only if every message was applied
exactly once, in order.
"""

from __future__ import annotations

import importlib.util
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from _stores import REDIS, postgres_admin, redis_admin, require, tag
from conftest import PURE_ONLY

pytest.importorskip("redis")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "keyed_counters"
CORES = [pytest.param("compiled", marks=pytest.mark.compiled), "pure"]
WAIT = 90.0  # seconds: generous limits for a loaded machine, never a performance claim

PROGRAM = """
import hashlib
import json

from elmstate.redis import Program


def init():
    return {"n": 0, "chain": ""}, None


def update(msg):
    def apply(model):
        text = model["chain"] + json.dumps(msg, sort_keys=True)
        return {"n": model["n"] + 1, "chain": hashlib.sha256(text.encode()).hexdigest()}, None

    return apply


def hydrate(ctx, key, value):
    return json.loads(value), None


def dehydrate(ctx, key, model):
    return json.dumps(model).encode()


PROGRAM = Program(init, update, hydrate, dehydrate)
NOT_A_PROGRAM = {"init": init, "update": update}


def expected(messages):
    model, _ = init()
    for message in messages:
        model, _ = update(message)(model)
    return model
"""


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[str]:
    """A logical stream name of the test's own; its Redis keys deleted afterwards."""
    require("redis")
    name = f"elmstate-test-cli-{tag(tmp_path)}"
    drop_stream(name)
    yield name
    drop_stream(name)


def drop_stream(name: str) -> None:
    with redis_admin() as client:
        keys = list(client.scan_iter(match=f"{name}:*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def chain(tmp_path: Path) -> ModuleType:
    """The test program, written to tmp_path/chain.py (the CLI's working directory)
    and imported here too, to read models and compute the expected ones."""
    path = tmp_path / "chain.py"
    path.write_text(PROGRAM)
    spec = importlib.util.spec_from_file_location(f"chain_{tag(tmp_path)}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def environment(core: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if core is None:
        return env
    if core == "compiled" and PURE_ONLY:
        pytest.skip("ELMSTATE_NO_EXTENSIONS is set")
    env.pop("ELMSTATE_NO_EXTENSIONS", None)
    if core == "pure":
        env["ELMSTATE_NO_EXTENSIONS"] = "1"
    return env


_STARTED: list[Cli] = []


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    """Kill what a failed test left running, and close its files."""
    yield
    while _STARTED:
        cli = _STARTED.pop()
        if cli.alive():
            cli.proc.kill()
        cli.wait()


class Cli:
    """One ``python -m elmstate.redis`` process; its stderr goes to a file (or a pty)."""

    def __init__(
        self,
        cwd: Path,
        *args: str,
        core: str | None = None,
        stderr: Any = None,
        command: list[str] | None = None,
    ) -> None:
        self.log = cwd / f"cli-{time.monotonic_ns()}.err"
        self._file = None
        self._out: str | None = None
        if stderr is None:
            self._file = self.log.open("wb")
            stderr = self._file
        argv = command or [sys.executable, "-m", "elmstate.redis", *args]
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=environment(core),
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
        _STARTED.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.alive():
            self.proc.send_signal(signum)
        return self.wait()

    def wait(self) -> int:
        try:
            code = self.proc.wait(timeout=WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self._file is not None:
                self._file.close()
            if self.proc.stdout is not None and self._out is None:
                self._out = self.proc.stdout.read().decode()
                self.proc.stdout.close()
        return code

    @property
    def out(self) -> str:
        """stdout, once the process has ended."""
        assert self._out is not None, "wait() first"
        return self._out

    @property
    def err(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def worker_args(name: str, store: str, *extra: str, shards: int = 4) -> list[str]:
    return [
        "worker",
        "chain:PROGRAM",
        "--redis",
        REDIS,
        "--store",
        store,
        "--name",
        name,
        "--shards",
        str(shards),
        *extra,
    ]


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'snapshots.sqlite3'}"  # absolute: four slashes


def produce(name: str, keys: int, per_key: int, *, shards: int = 4, start: int = 0) -> dict:
    """``per_key`` messages for each of ``keys`` keys; returns key -> messages."""
    import redis

    from elmstate.redis import KeyedProducer

    made: dict[str, list[dict[str, Any]]] = {}
    with redis.Redis.from_url(REDIS) as client:
        producer = KeyedProducer(client, name, shards=shards)
        for k in range(keys):
            key = f"key-{k}"
            messages = [{"k": key, "i": start + i} for i in range(per_key)]
            producer.put(None, key, *messages)
            made[key] = messages
    return made


@contextmanager
def reader(chain: ModuleType, name: str, store: Any, shards: int = 4) -> Iterator[Any]:
    """A KeyedWorker that never runs: it reads the models the CLI saved."""
    import redis

    from elmstate.redis import KeyedWorker

    with redis.Redis.from_url(REDIS) as client:
        yield KeyedWorker(
            client,
            name,
            shards=shards,
            store=store,
            init=chain.init,
            update=chain.update,
            hydrator=chain.hydrate,
            dehydrator=chain.dehydrate,
        )


@contextmanager
def sqlite_reader(chain: ModuleType, name: str, path: Path) -> Iterator[Any]:
    import elmstate

    with elmstate.SQLiteStore(path) as store, reader(chain, name, store) as read:
        yield read


def wait_for_models(cli: Cli, read: Any, chain: ModuleType, made: dict) -> None:
    """Wait until every key's saved model is the fold of its messages."""
    goal = {key: chain.expected(messages) for key, messages in made.items()}
    deadline = time.monotonic() + WAIT
    while True:
        models = {key: read.load(None, key) for key in goal}
        if models == goal:
            return
        for key, model in models.items():  # once past the goal, it can never get there
            assert model is None or model["n"] <= goal[key]["n"], (key, model, goal[key])
        assert cli.alive(), cli.err
        assert time.monotonic() < deadline, f"models not there after {WAIT} s: {cli.err}"
        time.sleep(0.05)


def leases_held(name: str) -> tuple[list[bytes], int]:
    with redis_admin() as client:
        return list(client.scan_iter(match=f"{name}:lease:*")), client.zcard(f"{name}:workers")


def wait_for_leases(cli: Cli, name: str, shards: int) -> None:
    deadline = time.monotonic() + WAIT
    while len(leases_held(name)[0]) < shards:
        assert cli.alive(), cli.err
        assert time.monotonic() < deadline, cli.err
        time.sleep(0.05)


# ------------------------------------------------------------------ running


@pytest.mark.parametrize("core", CORES)
def test_processes_events_and_exits_0_on_sigterm(
    core: str, tmp_path: Path, stream: str, chain: ModuleType
) -> None:

    made = produce(stream, keys=30, per_key=10)  # before the workers start
    cli = Cli(tmp_path, *worker_args(stream, sqlite_url(tmp_path), "--workers", "2"), core=core)
    with sqlite_reader(chain, stream, tmp_path / "snapshots.sqlite3") as read:
        wait_for_models(cli, read, chain, made)
        more = produce(stream, keys=30, per_key=5, start=10)  # while they run
        made = {key: made[key] + more[key] for key in made}
        wait_for_models(cli, read, chain, made)
        wait_for_leases(cli, stream, 4)
        assert cli.stop() == 0, cli.err
        # Released at once, not lapsed: the lease is 10 s.
        assert leases_held(stream) == ([], 0)
        assert {key: read.load(None, key) for key in made} == {
            key: chain.expected(messages) for key, messages in made.items()
        }
    lines = cli.err.splitlines()
    assert lines[0].startswith(f"python -m elmstate.redis: 2 workers on {stream!r} (4 shards")
    assert "SIGTERM: finishing the pages in flight, releasing the leases" in lines[1]
    assert lines[2].startswith("python -m elmstate.redis: stopped after ")
    assert lines[2].endswith(": 450 entries applied, 0 skipped, 0 dead-lettered, 0 conflicts"), (
        lines
    )
    assert len(lines) == 3, lines
    assert cli.out == ""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_run_loses_nothing(
    signum: int, tmp_path: Path, stream: str, chain: ModuleType
) -> None:
    """Stopped while pages are in flight, restarted: every message applied once."""

    made = produce(stream, keys=40, per_key=30)
    args = worker_args(stream, sqlite_url(tmp_path), "--workers", "3", "--page", "7")
    first = Cli(tmp_path, *args)
    with sqlite_reader(chain, stream, tmp_path / "snapshots.sqlite3") as read:
        deadline = time.monotonic() + WAIT
        while not any(read.load(None, key) for key in made):  # some applied, not all
            assert first.alive(), first.err
            assert time.monotonic() < deadline, first.err
            time.sleep(0.01)
        assert first.stop(signum) == 0, first.err
        assert leases_held(stream) == ([], 0)
        applied = sum((read.load(None, key) or {"n": 0})["n"] for key in made)
        assert 0 < applied
        second = Cli(tmp_path, *args)
        wait_for_models(second, read, chain, made)
        assert second.stop() == 0, second.err
    name = signal.Signals(signum).name
    assert f"{name}: finishing the pages in flight" in first.err
    assert "Traceback" not in first.err + second.err


def test_help_lists_the_options(tmp_path: Path) -> None:
    cli = Cli(tmp_path, "worker", "--help")
    assert cli.wait() == 0
    out = cli.out
    for option in ("--redis URL", "--store URL", "--name NAME", "--shards N", "--workers W"):
        assert option in out
    for word in ("--lease", "--page", "--max-failures", "--output", "sqlite:////", "exit status"):
        assert word in out


# ------------------------------------------------------------------ refusals


def refused(tmp_path: Path, *args: str) -> tuple[int, str]:
    cli = Cli(tmp_path, *args)
    code = cli.wait()
    err = cli.err
    assert "Traceback" not in err, err
    assert cli.out == ""
    return code, err


@pytest.mark.parametrize(
    ("program", "message"),
    [
        ("chain", "expected MODULE:PROGRAM (e.g. counters:PROGRAM), got 'chain'"),
        ("no_such_module:PROGRAM", "cannot import 'no_such_module': no module named"),
        ("chain:MISSING", "has no attribute 'MISSING'"),
        ("chain:NOT_A_PROGRAM", "chain:NOT_A_PROGRAM is an object of type dict, not an"),
    ],
)
def test_a_bad_program_is_refused(
    program: str, message: str, tmp_path: Path, stream: str, chain: ModuleType
) -> None:
    args = worker_args(stream, sqlite_url(tmp_path))
    args[1] = program
    code, err = refused(tmp_path, *args)
    assert code == 2
    assert err == f"python -m elmstate.redis: error: {err.split('error: ', 1)[1]}"
    assert message in err
    assert len(err.splitlines()) == 1


def test_a_program_module_that_raises_shows_its_traceback(tmp_path: Path, stream: str) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    args = worker_args(stream, sqlite_url(tmp_path))
    args[1] = "broken:PROGRAM"
    cli = Cli(tmp_path, *args)
    assert cli.wait() == 2
    assert "error: importing 'broken' failed:" in cli.err
    assert "RuntimeError: boom at import" in cli.err  # the user's own code: worth showing


@pytest.mark.parametrize(
    ("store", "code", "message"),
    [
        ("mysql://db/x", 2, "unsupported URL scheme ('mysql')"),
        ("snapshots.sqlite3", 2, "unsupported URL scheme (none)"),
        ("sqlite://snapshots.sqlite3", 2, "names a host; use sqlite:///relative/path"),
        ("sqlite:///:memory:", 2, "a sqlite URL needs a file path"),
        ("sqlite:///", 2, "a sqlite URL needs a file path"),
        ("sqlite:///no/such/dir/x.sqlite3", 1, "cannot open the store sqlite:///no/such/dir"),
    ],
)
def test_a_bad_store_url_is_refused(
    store: str, code: int, message: str, tmp_path: Path, stream: str, chain: ModuleType
) -> None:
    got, err = refused(tmp_path, *worker_args(stream, store))
    assert got == code
    assert message in err
    assert len(err.splitlines()) == 1


def test_a_relative_sqlite_path_is_relative_to_the_working_directory(
    tmp_path: Path, stream: str, chain: ModuleType
) -> None:

    made = produce(stream, keys=3, per_key=4)
    cli = Cli(tmp_path, *worker_args(stream, "sqlite:///rel.sqlite3"))
    with sqlite_reader(chain, stream, tmp_path / "rel.sqlite3") as read:
        wait_for_models(cli, read, chain, made)
    assert cli.stop() == 0


def test_a_shard_count_other_than_the_recorded_one_is_refused(
    tmp_path: Path, stream: str, chain: ModuleType
) -> None:
    produce(stream, keys=1, per_key=1, shards=4)
    code, err = refused(tmp_path, *worker_args(stream, sqlite_url(tmp_path), shards=8))
    assert code == 2
    assert f"shards=8 but {stream!r} was created with 4 shards" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--shards", "0"),
        ("--workers", "x"),
        ("--page", "-1"),
        ("--max-failures", "0"),
        ("--lease", "0"),
        ("--lease", "inf"),
    ],
)
def test_bad_numbers_are_usage_errors(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from elmstate.redis._cli import main  # argparse refuses them before anything runs

    args = worker_args("unused", "sqlite:///x.sqlite3")
    if option == "--shards":
        args[args.index("--shards") + 1] = value
    else:
        args += [option, value]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert f"argument {option}:" in capsys.readouterr().err


def with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


PASSWORD = "Sekr3t/p@ss:w%rd"  # percent-encoded in a URL: both spellings must stay hidden


def hidden(text: str) -> bool:
    return PASSWORD not in text and quote(PASSWORD, safe="") not in text


def test_an_unreachable_redis_is_one_line_and_exit_1(tmp_path: Path, chain: ModuleType) -> None:
    url = with_password("redis://127.0.0.1:1/0", "someone", PASSWORD)
    args = worker_args("unused", sqlite_url(tmp_path))
    args[args.index("--redis") + 1] = url
    code, err = refused(tmp_path, *args)
    assert code == 1
    assert err.startswith(
        "python -m elmstate.redis: error: cannot reach Redis at redis://someone:***@"
    )
    assert "Connection refused" in err
    assert len(err.splitlines()) == 1
    assert hidden(err)


def test_a_wrong_redis_password_is_one_line_and_exit_1(
    tmp_path: Path, stream: str, chain: ModuleType
) -> None:
    url = with_password(REDIS, f"elmstate-test-nobody-{tag(tmp_path)}", PASSWORD)
    args = worker_args(stream, sqlite_url(tmp_path))
    args[args.index("--redis") + 1] = url
    code, err = refused(tmp_path, *args)
    assert code == 1
    assert "AuthenticationError" in err
    assert len(err.splitlines()) == 1
    assert hidden(err)


def test_an_unreachable_store_is_one_line_and_exit_1(
    tmp_path: Path, stream: str, chain: ModuleType
) -> None:
    pytest.importorskip("psycopg")
    url = with_password("postgresql://127.0.0.1:1/test", "postgres", PASSWORD)
    code, err = refused(tmp_path, *worker_args(stream, url))
    assert code == 1
    assert err.startswith(
        "python -m elmstate.redis: error: cannot open the store postgresql://postgres:***@"
    )
    assert "Connection refused" in err
    assert len(err.splitlines()) == 1  # libpq's two-line message folded into one
    assert hidden(err)


# ------------------------------------------------- passwords in a working run


@pytest.fixture
def redis_user(tmp_path: Path) -> Iterator[str]:
    """An ACL user of the test's own on the real Redis, with PASSWORD; a Redis URL for it."""
    require("redis")
    user = f"elmstate-test-cli-{tag(tmp_path)}"
    with redis_admin() as client:
        client.acl_setuser(
            user,
            enabled=True,
            passwords=[f"+{PASSWORD}"],
            keys=["*"],
            channels=["*"],
            commands=["+@all"],
        )
    try:
        yield with_password(REDIS, user, PASSWORD)
    finally:
        with redis_admin() as client:
            client.acl_deluser(user)  # also closes its connections


def kill_store_connections(kind: str, name: str) -> int:
    """Kill the store connections named ``name`` (only this test's own)."""
    if kind == "postgres":
        with postgres_admin() as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (name,),
            ).fetchall()
        return len(rows)
    with redis_admin() as client:
        ids = [c["id"] for c in client.client_list() if c.get("name") == name]
        for client_id in ids:
            client.client_kill_filter(_id=client_id)
    return len(ids)


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_passwords_never_appear_in_the_output(
    kind: str, tmp_path: Path, stream: str, chain: ModuleType, redis_user: str
) -> None:
    """A run with passwords in --redis and --store, whose store connections are
    killed mid-run (with PostgreSQL, the workers log their retries, error
    messages included): the passwords never show."""
    require(kind)
    table = f"elmstate_test_cli_{tag(tmp_path)}"
    user = urlsplit(redis_user).username
    named = f"elmstate-test-cli-store-{tag(tmp_path)}"
    if kind == "postgres":
        from elmstate.stores.postgres import PostgresStore

        # trust auth on this machine: any password is accepted, and sent.
        store_url = with_password("postgresql://127.0.0.1:5432/test", "postgres", PASSWORD)
        store_url += f"?application_name={named}"
        extra = ["--table", table]
        opened: Any = PostgresStore(
            "host=127.0.0.1 port=5432 dbname=test user=postgres", table=table
        )
    else:
        from elmstate.stores.redis import RedisStore

        store_url = f"{redis_user}?client_name={named}"
        extra = ["--prefix", f"{stream}:snap:"]
        opened = RedisStore(REDIS, prefix=f"{stream}:snap:")
    made = produce(stream, keys=10, per_key=10)
    args = worker_args(stream, store_url, "--workers", "2", *extra)
    args[args.index("--redis") + 1] = redis_user
    cli = Cli(tmp_path, *args)
    try:
        with reader(chain, stream, opened) as read:
            wait_for_models(cli, read, chain, made)
            assert kill_store_connections(kind, named) > 0
            more = produce(stream, keys=10, per_key=10, start=10)
            made = {key: made[key] + more[key] for key in made}
            wait_for_models(cli, read, chain, made)
        assert cli.stop() == 0, cli.err
    finally:
        opened.close()
        if kind == "postgres":
            with postgres_admin() as conn:
                conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    err = cli.err
    assert hidden(err), err
    assert f"Redis redis://{user}:***@" in err
    assert f"store {kind}" in err.replace("postgresql", "postgres")
    assert ":***@" in err.split(" store ", 1)[1]
    if kind == "postgres":  # (redis-py reconnects an idle connection it finds closed)
        assert "; retrying in " in err  # the workers' warnings went through the same filter


def test_workers_survive_their_redis_connections_being_killed(
    tmp_path: Path, stream: str, chain: ModuleType
) -> None:
    named = f"elmstate-test-cli-workers-{tag(tmp_path)}"
    made = produce(stream, keys=10, per_key=10)
    args = worker_args(stream, sqlite_url(tmp_path), "--workers", "2")
    args[args.index("--redis") + 1] = f"{REDIS}?client_name={named}"
    cli = Cli(tmp_path, *args)
    with sqlite_reader(chain, stream, tmp_path / "snapshots.sqlite3") as read:
        wait_for_models(cli, read, chain, made)
        assert kill_store_connections("redis", named) > 0  # the workers' own, by name
        more = produce(stream, keys=10, per_key=10, start=10)
        made = {key: made[key] + more[key] for key in made}
        wait_for_models(cli, read, chain, made)
    assert cli.stop() == 0, cli.err


# ------------------------------------------------------------------ progress


def test_the_progress_line_shows_on_a_terminal(
    tmp_path: Path, stream: str, chain: ModuleType
) -> None:
    produce(stream, keys=20, per_key=20)
    master, slave = pty.openpty()
    try:
        cli = Cli(
            tmp_path, *worker_args(stream, sqlite_url(tmp_path), "--workers", "2"), stderr=slave
        )
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + WAIT
        # Two progress lines: the second shows the shards owned once balanced.
        while seen.count(b"entries/s") < 2:
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                seen += os.read(master, 4096)
        assert cli.stop() == 0
        while True:  # the rest, up to the end of the output
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    text = seen.decode()
    progress = [part for part in text.split("\r") if "entries/s" in part]
    assert progress, text
    line = progress[-1]
    assert line.startswith(f"{stream}: ")
    assert " entries/s, lag " in line
    assert "/4 shards owned by 2 workers" in line
    assert line.endswith("\x1b[K")
    assert "stopped after" in text  # the summary, after the line was cleared


def test_no_progress_line_off_a_terminal(tmp_path: Path, stream: str, chain: ModuleType) -> None:

    made = produce(stream, keys=20, per_key=20)
    cli = Cli(tmp_path, *worker_args(stream, sqlite_url(tmp_path), "--workers", "2"))
    with sqlite_reader(chain, stream, tmp_path / "snapshots.sqlite3") as read:
        wait_for_models(cli, read, chain, made)
    time.sleep(2.5)  # two progress periods: a terminal would have had lines by now
    assert cli.stop() == 0
    err = cli.err
    assert "\r" not in err and "\x1b" not in err and "entries/s" not in err
    assert len(err.splitlines()) == 3, err  # started, SIGTERM, stopped


# ------------------------------------------------------------------ the example


@pytest.mark.parametrize("core", CORES)
def test_the_example_demo_runs_end_to_end(core: str, tmp_path: Path) -> None:
    require("redis")
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "demo.py"),
            "--redis",
            REDIS,
            "--accounts",
            "40",
            "--events",
            "1500",
            "--seed",
            "3",
        ],
        cwd=tmp_path,
        env=environment(core),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    assert out[0].startswith("$ python -m elmstate.redis worker accounts:PROGRAM --redis ")
    rows = [line for line in out if line.startswith("acct-")]
    assert len(rows) == 40 and all("WRONG" not in row for row in rows)
    total = next(line for line in out if line.startswith("total: "))
    assert total.startswith("total: 40 accounts, 1,500 events, ")
    assert "check: OK, every account matches the events produced" in out[-2]
    assert out[-1] == "workers stopped by SIGTERM, exit status 0"
    # The workers' own lines, on stderr: started, stopped by SIGTERM, nothing else.
    assert "Traceback" not in proc.stderr
    assert "entries applied" in proc.stderr and "1,500 entries applied" in proc.stderr
    # It deleted its stream's keys.
    name = out[1].split(" on ")[1].split(" ")[0].strip("'")
    with redis_admin() as client:
        assert list(client.scan_iter(match=f"{name}:*")) == []


def test_the_example_in_two_terminals(tmp_path: Path, stream: str) -> None:
    """workers.py in one process, producer.py (twice) in another, as the README says."""
    db = tmp_path / "accounts.sqlite3"
    common = ["--redis", REDIS, "--name", stream, "--db", str(db)]
    workers = Cli(tmp_path, command=[sys.executable, str(EXAMPLE / "workers.py"), *common])
    try:
        for run in (1, 2):
            proc = subprocess.run(
                [
                    sys.executable,
                    str(EXAMPLE / "producer.py"),
                    *common,
                    "--accounts",
                    "25",
                    "--events",
                    "500",
                    "--seed",
                    str(run),
                    "--timeout",
                    str(WAIT),
                ],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr + workers.err
            out = proc.stdout.splitlines()
            assert f"total: 25 accounts, {500 * run:,} events, " in "\n".join(out)
            assert out[-1].startswith("check: OK, every account matches the events produced")
        # workers.py became the command line (exec): SIGTERM reaches it.
        assert workers.stop() == 0, workers.err
    finally:
        if workers.alive():
            workers.proc.kill()
            workers.proc.wait()
    assert workers.out.startswith("$ python -m elmstate.redis worker accounts:PROGRAM ")
    assert "2 workers on" in workers.err
    assert leases_held(stream) == ([], 0)
