"""The newcomer's path: build the wheel, install it with its dependencies into a fresh virtual environment, and
from an empty folder run `user-service init`, then `serve`, then register and log in. SQLite only, as a newcomer
starts."""

import os
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.e2e.conftest import StartServe, process_env, round_trip, run_command

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 300.0
INSTALL_TIMEOUT = 600.0


def succeed(args: list[str | Path], *, cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run a command that must exit 0; its standard output."""
    result = run_command(args, env=env if env is not None else process_env(), cwd=cwd, timeout=timeout)
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    succeed([sys.executable, "-m", "build", "--wheel", "--outdir", out, REPO], cwd=out, timeout=BUILD_TIMEOUT)
    wheels = list(out.glob("user_service-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_ships_the_migrations_and_the_env_example(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        env_example = archive.read("user_service/_bundled/env.example").decode()
        entry_points = next(archive.read(name).decode() for name in names if name.endswith("entry_points.txt"))

    assert "user_service/_bundled/alembic/env.py" in names
    assert "user_service/_bundled/alembic/script.py.mako" in names
    shipped = {Path(name).name for name in names if name.startswith("user_service/_bundled/alembic/versions/")}
    in_repo = {path.name for path in (REPO / "alembic" / "versions").glob("*.py")}
    assert in_repo
    assert shipped == in_repo
    assert env_example == (REPO / ".env.example").read_text(encoding="utf-8")
    assert "user_service/py.typed" in names
    assert "user-service = user_service.cli:main" in entry_points


def test_newcomer_installs_the_wheel_and_serves_from_an_empty_folder(
    wheel: Path, tmp_path: Path, start_serve: StartServe
) -> None:
    venv = tmp_path / "venv"
    succeed([sys.executable, "-m", "venv", venv], cwd=tmp_path, timeout=120)
    started = time.monotonic()
    succeed([venv / "bin" / "python", "-m", "pip", "install", wheel], cwd=tmp_path, timeout=INSTALL_TIMEOUT)
    # Shown with `pytest -rP`: how long a newcomer waits for the install.
    print(f"wheel install with dependencies: {time.monotonic() - started:.1f} s")

    folder = tmp_path / "newcomer"
    folder.mkdir()
    env = process_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(venv))
    located = succeed(
        [venv / "bin" / "python", "-c", "import user_service; print(user_service.__file__)"],
        cwd=folder,
        timeout=60,
        env=env,
    )
    assert Path(located.strip()).is_relative_to(venv)

    said = succeed([venv / "bin" / "user-service", "init"], cwd=folder, timeout=120, env=env)
    assert "user-service serve" in said
    assert (folder / ".env").is_file()
    assert (folder / "user-service.db").is_file()
    assert (folder / "uploads").is_dir()

    server = start_serve(env=env, cwd=folder, executable=venv / "bin" / "user-service")
    round_trip(server.base_url, namespace="newcomer")
    server.stop()
    assert "Application shutdown complete." in server.output()
