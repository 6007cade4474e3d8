# shellcheck shell=bash
# Sourced by scripts/test and scripts/demo: the Python environment both run in.
#
# ensure_python_env: activates .venv (made with ${PYTHON:-python3} if missing) unless a virtual
# environment is already active, then installs exactly the versions in requirements/test.txt
# (the committed lock of the [test] extra; pip checks every file's sha256 against it) and the
# package itself, editable. The install is skipped while the lock, pyproject.toml and the
# interpreter are unchanged since the last one (a stamp in the environment), so the demo and
# the tests share one install. Set STRICT_SINGLETON_REINSTALL=1 to install again regardless.
# Run from the repository's root.

# A stamp holds the hash of what an install was made from; the install is skipped while
# the hash still matches (and the installed result is still there).
digest() { cat "$@" | python -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'; }
fresh() { [ -z "${STRICT_SINGLETON_REINSTALL:-}" ] && [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

ensure_python_env() {
  if [ -z "${VIRTUAL_ENV:-}" ]; then
    if [ ! -x .venv/bin/python ]; then
      "${PYTHON:-python3}" -m venv .venv
    fi
    # shellcheck disable=SC1091
    . .venv/bin/activate
  fi

  local py_stamp="$VIRTUAL_ENV/.strict-singleton-install.sha256"
  local py_want
  py_want="$( (cat requirements/test.txt pyproject.toml; python -c 'import sys; print(sys.version, sys.prefix)') | digest)"
  if fresh "$py_stamp" "$py_want" && python -c 'import importlib.metadata as m; m.version("strict-singleton")' 2>/dev/null; then
    echo "== Python packages: up to date (requirements/test.txt and pyproject.toml unchanged)"
  else
    echo "== installing Python packages (requirements/test.txt, hashes checked)"
    rm -f "$py_stamp"
    local pip=(python -m pip --quiet --disable-pip-version-check)
    "${pip[@]}" install --require-hashes --no-deps -r requirements/test.txt
    # The package itself: its dependencies are all in the lock, and its build backend too
    # (setuptools), so nothing unpinned is fetched.
    "${pip[@]}" install --no-deps --no-build-isolation -e .
    "${pip[@]}" check  # the lock satisfies every declared range (a stale lock fails here)
    echo "$py_want" > "$py_stamp"
  fi
}
