# One image for every routebatch service (CLI, workers, migrations, simulated provider).
# GPU score workers need a CUDA build of torch: build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=all
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    ROUTEBATCH_CONFIG=/etc/routebatch/routebatch.toml

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY routing ./routing
COPY jobs ./jobs
COPY worker ./worker
COPY migrations ./migrations
# torch first, from the chosen index only (PyPI's default build is the multi-GB CUDA one).
# EXTRAS (pyproject.toml): all by default, so one image runs every service; a lean image for
# generate workers, the CLI and migrations only, without torch: --build-arg EXTRAS=
RUN if [ -n "$EXTRAS" ]; then \
        pip install --index-url "$TORCH_INDEX" "torch==$(sed -n 's/^torch==//p' constraints.txt)"; \
    fi \
    && pip install -c constraints.txt ".${EXTRAS:+[$EXTRAS]}" \
    && useradd --create-home routebatch
COPY deploy/compose.toml /etc/routebatch/routebatch.toml
USER routebatch
CMD ["routebatch", "--help"]
