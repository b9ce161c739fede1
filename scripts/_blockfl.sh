# Sourced by the figure scripts: run from the repository root, prefer the project's venv.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
blockfl() {
    if [ -x .venv/bin/blockfl ]; then .venv/bin/blockfl "$@"; else command blockfl "$@"; fi
}
