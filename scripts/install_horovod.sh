#!/usr/bin/env bash
# Install Horovod 0.28.1 (PyTorch + Gloo, CPU; no MPI, TensorFlow or MXNet)
# into the Python environment whose interpreter is given as the only argument.
#
#   scripts/install_horovod.sh PYTHON        e.g. scripts/install_horovod.sh .venv/bin/python
#
# Why a script: Horovod 0.28.1 is the last release and its CMake files ask for
# C++14, while the headers of torch >= 2.1 need C++17, so `pip install horovod`
# fails against our torch. We download the sdist from PyPI, raise the C++
# standard to 17 in the unpacked copy (CMakeLists.txt and
# horovod/torch/CMakeLists.txt), build a wheel against the torch already
# installed in the target env (--no-build-isolation) and install it.
#
# The wheel is cached, keyed by Python version, torch version, machine and GPU
# operations, in ${COHORTSEG_WHEEL_CACHE:-$HOME/.cache/cohortseg/wheels}, so a
# second install (another venv, CI) takes seconds instead of a rebuild. The
# sdist is cached there too. If `PYTHON -c 'import horovod.torch'` already
# works, nothing is done.
#
# Build needs: g++ and make (Debian: `apt-get install g++ make`; installed
# automatically when run as root with apt-get), cmake >= 3.13 (the system one,
# or else one from PyPI in a throwaway folder), and the torch of the target env.
# The runtime deps (cloudpickle, psutil, pyyaml, packaging) are installed into
# the target env if missing. A build takes several minutes on 2 cores.
#
# Environment:
#   COHORTSEG_WHEEL_CACHE   wheel/sdist cache (default ~/.cache/cohortseg/wheels)
#   COHORTSEG_BUILD_JOBS    parallel compile jobs (default: nproc)
#   COHORTSEG_KEEP_BUILD=1  keep the temporary build folder
#   HOROVOD_GPU_OPERATIONS=NCCL
#                           build the GPU (NCCL) ops as well. Needs a CUDA torch,
#                           the CUDA toolkit (nvcc; HOROVOD_CUDA_HOME if not on
#                           PATH) and NCCL (HOROVOD_NCCL_HOME if not in a system
#                           path). UNTESTED here: our machines have no CUDA
#                           toolkit. Gets its own cache entry.
#   Other HOROVOD_* build variables set by the caller are passed through.
set -euo pipefail

HOROVOD_VERSION=0.28.1
HOROVOD_SDIST="horovod-${HOROVOD_VERSION}.tar.gz"
HOROVOD_SDIST_SHA256=92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0
# Bump when the patch or the build flags change, so old cached wheels are not reused.
PATCH_REV=cxx17.1
RUNTIME_DEPS=(cloudpickle psutil pyyaml packaging)

log() { printf '[install_horovod %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2
    echo "usage: $0 PYTHON" >&2
    exit 2
fi

# Absolute path, but do not resolve symlinks: a venv's python is a symlink to
# the base interpreter and resolving it would leave the venv.
PYTHON=$1
if [[ $PYTHON != */* ]]; then
    PYTHON=$(command -v "$PYTHON") || die "interpreter '$1' not found on PATH"
fi
[[ -x $PYTHON ]] || die "'$PYTHON' is not an executable Python interpreter"
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"
"$PYTHON" -c 'import sys' || die "'$PYTHON' does not run"
log "target interpreter: $PYTHON ($("$PYTHON" -c 'import sys; print(sys.prefix)'))"

pip() { "$PYTHON" -m pip --disable-pip-version-check "$@"; }

check_horovod() {
    "$PYTHON" - <<'EOF'
import horovod, horovod.torch as hvd
assert hvd.gloo_built(), "Horovod was built without Gloo"
print(f"horovod {horovod.__version__}: torch ops OK, gloo_built={hvd.gloo_built()}, "
      f"mpi_built={hvd.mpi_built()}, nccl_built={hvd.nccl_built()}")
EOF
}

if "$PYTHON" -c 'import horovod.torch' >/dev/null 2>&1; then
    log "horovod.torch already imports: $("$PYTHON" -c 'import horovod; print(horovod.__version__)'); nothing to do"
    exit 0
fi

gpu_ops=${HOROVOD_GPU_OPERATIONS:-}
if [[ -n $gpu_ops && $gpu_ops != NCCL ]]; then
    die "HOROVOD_GPU_OPERATIONS=$gpu_ops is not supported by this script (only NCCL or unset)"
fi

# The wheel links against this exact torch (C++ ABI), so the key names it.
key=$("$PYTHON" -c '
import platform, sys, torch
print(f"py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}-{platform.machine()}")') ||
    die "torch is not importable by $PYTHON; install the project's torch first"
key="horovod-${HOROVOD_VERSION}-${PATCH_REV}-${key}-${gpu_ops:-cpu}"
cache_root=${COHORTSEG_WHEEL_CACHE:-$HOME/.cache/cohortseg/wheels}
cache_dir="$cache_root/$key"
mkdir -p "$cache_dir" "$cache_root/sdist" "$cache_root/logs"
log "wheel cache: $cache_dir"

# Serialise concurrent runs sharing one cache (no-op without flock).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache_root/.install_horovod.lock"
    flock 9
fi

install_runtime_deps() {
    # Without -U: already satisfied requirements are left alone (no index query).
    log "ensuring runtime deps: ${RUNTIME_DEPS[*]}"
    pip install -q "${RUNTIME_DEPS[@]}"
}

install_wheel() {
    # --force-reinstall: a broken horovod of the same version may be installed
    # (e.g. built against an older torch); --no-deps: never touch torch.
    log "installing $(basename "$1")"
    pip install -q --no-deps --force-reinstall "$1"
}

cached_wheel() { compgen -G "$cache_dir/horovod-${HOROVOD_VERSION}-*.whl" | head -n1 || true; }

wheel=$(cached_wheel)
if [[ -n $wheel ]]; then
    log "found cached wheel, skipping the build"
    install_runtime_deps
    if install_wheel "$wheel" && check_horovod; then
        log "done (from cache)"
        exit 0
    fi
    log "cached wheel does not work; removing it and rebuilding"
    rm -f "$wheel"
fi

# ---------------------------------------------------------------- build tools
ensure_compiler() {
    local missing=()
    command -v g++ >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1 || missing+=(g++)
    command -v make >/dev/null 2>&1 || missing+=(make)
    ((${#missing[@]} == 0)) && return 0
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing ${missing[*]} with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        die "missing build tools: ${missing[*]} (Debian: sudo apt-get install g++ make)"
    fi
}

build_dir=$(mktemp -d "${TMPDIR:-/tmp}/horovod-build.XXXXXX")
cleanup() {
    local rc=$?
    if [[ $rc -ne 0 || ${COHORTSEG_KEEP_BUILD:-0} == 1 ]]; then
        log "build folder kept: $build_dir"
    else
        rm -rf "$build_dir"
    fi
}
trap cleanup EXIT

ensure_compiler

cmake_ok() {
    local v
    v=$(cmake --version 2>/dev/null | sed -n 's/^cmake version \([0-9.]*\).*/\1/p')
    [[ -n $v ]] && printf '3.13\n%s\n' "$v" | sort -V -C
}
if ! cmake_ok; then
    # A throwaway copy from PyPI, not installed into the target env. <4: the
    # bundled third-party CMake files declare very old minimum versions.
    log "no cmake >= 3.13 on PATH; fetching one from PyPI into the build folder"
    pip install -q --target "$build_dir/cmake-tools" 'cmake>=3.18,<4'
    export PATH="$build_dir/cmake-tools/cmake/data/bin:$PATH"
    cmake_ok || die "cmake from PyPI does not run"
fi
# Lets CMake >= 4 (if that is what the system has) accept old cmake_minimum_required.
export CMAKE_POLICY_VERSION_MINIMUM=3.5
log "using $(command -v cmake) ($(cmake --version | head -n1)), $(c++ --version | head -n1)"

# Build-time imports of Horovod's setup.py (it imports horovod.runner) and setuptools' wheel support.
install_runtime_deps
if ! "$PYTHON" -c 'import setuptools.command.bdist_wheel' >/dev/null 2>&1 &&
    ! "$PYTHON" -c 'import setuptools, wheel' >/dev/null 2>&1; then
    log "installing setuptools' wheel support"
    pip install -q 'setuptools>=70.1'
fi

# ---------------------------------------------------------------- sdist
sdist="$cache_root/sdist/$HOROVOD_SDIST"
if [[ -f $sdist ]] && echo "$HOROVOD_SDIST_SHA256  $sdist" | sha256sum -c --status; then
    log "using cached sdist $sdist"
else
    log "downloading $HOROVOD_SDIST from PyPI"
    echo "horovod==${HOROVOD_VERSION} --hash=sha256:${HOROVOD_SDIST_SHA256}" >"$build_dir/req.txt"
    pip download -q --no-deps --no-binary :all: --require-hashes \
        -r "$build_dir/req.txt" -d "$build_dir/dl"
    mv -f "$build_dir/dl/$HOROVOD_SDIST" "$sdist"
fi

tar -xzf "$sdist" -C "$build_dir"
src="$build_dir/horovod-${HOROVOD_VERSION}"

# ---------------------------------------------------------------- patch
log "patching CMAKE_CXX_STANDARD 14 -> 17 (torch >= 2.1 needs C++17)"
for f in CMakeLists.txt horovod/torch/CMakeLists.txt; do
    grep -q 'set(CMAKE_CXX_STANDARD 14)' "$src/$f" ||
        die "$f: 'set(CMAKE_CXX_STANDARD 14)' not found; sdist changed?"
    sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$src/$f"
    grep -q 'set(CMAKE_CXX_STANDARD 17)' "$src/$f" || die "patching $f failed"
done

# ---------------------------------------------------------------- build
jobs=${COHORTSEG_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}
export MAKEFLAGS="-j${jobs}" # setup.py passes -j8 to make unless MAKEFLAGS is set
export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
export HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1
if [[ $gpu_ops == NCCL ]]; then
    export HOROVOD_GPU_OPERATIONS=NCCL
    log "HOROVOD_GPU_OPERATIONS=NCCL: building the NCCL GPU ops too (needs CUDA toolkit + NCCL)"
else
    unset HOROVOD_GPU_OPERATIONS HOROVOD_GPU_ALLREDUCE HOROVOD_GPU_ALLGATHER HOROVOD_GPU_BROADCAST \
        HOROVOD_GPU_ALLTOALL HOROVOD_GPU_REDUCESCATTER
    export HOROVOD_CPU_OPERATIONS=GLOO
fi

build_log="$cache_root/logs/$key-$(date +%Y%m%d-%H%M%S).log"
log "building the wheel with $jobs jobs (several minutes on 2 cores); log: $build_log"
start=$SECONDS
if ! pip wheel -v --no-build-isolation --no-deps -w "$build_dir/wheel" "$src" >"$build_log" 2>&1; then
    tail -n 60 "$build_log" >&2
    die "wheel build failed after $((SECONDS - start)) s; full log: $build_log"
fi
log "wheel built in $((SECONDS - start)) s"

built=$(compgen -G "$build_dir/wheel/horovod-${HOROVOD_VERSION}-*.whl" | head -n1 || true)
[[ -n $built ]] || die "pip wheel produced no horovod wheel; see $build_log"

# Atomic move into the cache, so an interrupted run never leaves a half wheel.
cp "$built" "$cache_dir/.$(basename "$built").tmp"
mv -f "$cache_dir/.$(basename "$built").tmp" "$cache_dir/$(basename "$built")"
wheel="$cache_dir/$(basename "$built")"
log "cached $wheel"

install_wheel "$wheel"
check_horovod || die "horovod installed but 'import horovod.torch' fails"
log "done"
