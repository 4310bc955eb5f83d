# CPU-only runtime image: ONNX Runtime backend (+ OpenVINO for the deadline guard's fast path), no torch.
# Build: docker build -t lightsaft-infer .
# Run:   docker run --rm lightsaft-infer                                   (the committed demo song)
#        docker run --rm --network none -v "$PWD/songs:/app/data/test:ro" -v "$PWD/out:/app/data/results" lightsaft-infer
#        docker run --rm -v "$PWD:/w" lightsaft-infer lightsaft-infer separate /w/song.wav -o /w/separated
# Checked by .ci/container-test (podman, grader-style: read-only songs, no network, user 1000).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LIGHTSAFT_BACKEND=onnx

# soundfile's wheels bundle libsndfile: no system packages are needed.
RUN useradd --create-home --uid 1000 app

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
# --chown at copy time: a later 'chown -R' would duplicate all of /app in a new layer.
COPY --chown=1000:1000 setup.py README.md predict.py run.sh aicrowd.json ./
COPY --chown=1000:1000 lightsaft_infer ./lightsaft_infer
COPY --chown=1000:1000 weights ./weights
COPY --chown=1000:1000 data ./data
# editable: the package and its 41 MB of default weights stay in /app, not copied again into site-packages
RUN pip install --no-cache-dir --no-deps -e .

# One of the authors' networks instead of the default model (the grader has no network, so it is baked in):
# pull it into a folder of the build context first (needs torch on that machine), then uncomment:
#   LIGHTSAFT_HOME=model-cache lightsaft-infer pull lasaft-v2-light
# COPY --chown=1000:1000 model-cache /app/model-cache
# ENV LIGHTSAFT_HOME=/app/model-cache LIGHTSAFT_WEIGHTS=lasaft-v2-light

USER 1000
CMD ["python", "predict.py"]
