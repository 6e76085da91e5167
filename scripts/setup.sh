#!/usr/bin/env bash
# Create or update the project's virtual environment in .venv and install WGSY into it.
#
# torch comes first, in the build that fits this machine: with an NVIDIA driver present, the default
# PyPI build (CUDA); without one, the CPU build, so a laptop or CI runner does not download several
# GB of CUDA libraries. pyproject.toml is then installed on top and finds torch already satisfied.
# Rerunning is cheap: nothing is reinstalled while pyproject.toml and this script are unchanged.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo_root/.venv"
python_bin=${PYTHON:-python3}
torch_version=${WGSY_TORCH_VERSION:-2.13.0}
extras=${WGSY_EXTRAS:-test}

if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "setup: $python_bin is $("$python_bin" --version 2>&1); WGSY needs Python 3.10 or newer." >&2
    echo "setup: set PYTHON=/path/to/python3.11 and run again." >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv"
    "$python_bin" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

stamp="$venv/.wgsy-installed"
fingerprint=$(cat "$repo_root/pyproject.toml" "$repo_root/scripts/setup.sh" | sha256sum | cut -c1-16)-$extras
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
    echo "setup: $venv is up to date"
    exit 0
fi

if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "setup: NVIDIA GPU found; installing torch $torch_version with CUDA"
        "${pip[@]}" install "torch==$torch_version"
    else
        echo "setup: no NVIDIA GPU found; installing the CPU build of torch $torch_version"
        # A CPU wheel that pip already knows about (a local wheel folder or mirror) is used first;
        # otherwise PyTorch's own CPU index is asked.
        "${pip[@]}" install "torch==$torch_version+cpu" 2>/dev/null \
            || "${pip[@]}" install "torch==$torch_version" --index-url https://download.pytorch.org/whl/cpu
    fi
fi

echo "setup: installing WGSY with extras [$extras]"
"${pip[@]}" install -e "$repo_root[$extras]"
echo "$fingerprint" > "$stamp"
echo "setup: done; the wgsy command is $venv/bin/wgsy"
