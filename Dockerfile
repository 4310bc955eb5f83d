# CPU-only runtime image: ONNX Runtime backend, no torch.
# Build: docker build -t lightsaft-infer .
# Run:   docker run --rm lightsaft-infer                        (the committed demo song)
#        docker run --rm -v "$PWD/data:/app/data" lightsaft-infer (your data/test/<song>/mixture.wav)
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
COPY setup.py README.md predict.py run.sh aicrowd.json ./
COPY lightsaft_infer ./lightsaft_infer
COPY weights ./weights
COPY data ./data
RUN pip install --no-cache-dir --no-deps . && chown -R 1000:1000 /app

USER 1000
CMD ["python", "predict.py"]
