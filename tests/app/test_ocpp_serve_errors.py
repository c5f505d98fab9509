"""`megastation serve` that cannot listen: one clear line naming the option, exit code 1."""

from __future__ import annotations

import socket
from pathlib import Path

from click.testing import CliRunner

from megastation.cli import main
from megastation.core.config import seeds_dir


def serve(tmp_path: Path, *args: str):
    return CliRunner().invoke(
        main,
        [
            "--config",
            str(seeds_dir() / "gwangju-donggu.toml"),
            "--db",
            str(tmp_path / "db.sqlite"),
            "serve",
            *args,
        ],
    )


def test_port_in_use(tmp_path: Path, seed_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(tmp_path, "--host", "127.0.0.1", "--port", str(port))
    assert result.exit_code == 1, result.output
    assert result.output == (
        f"Error: cannot listen on 127.0.0.1:{port}: address already in use; "
        f"choose another with --port or [server].port ({seed_path})\n"
    )


def test_host_not_of_this_machine(tmp_path: Path):
    result = serve(tmp_path, "--host", "192.0.2.1", "--port", "0")  # TEST-NET-1, never local
    assert result.exit_code == 1, result.output
    [line] = result.output.splitlines()
    assert line.startswith("Error: cannot listen on 192.0.2.1:0: ")
    assert "--host or [server].host" in line
    assert "Traceback" not in result.output
