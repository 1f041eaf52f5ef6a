"""The web demo's HTTP API and page: FastAPI routes over the catalogue, the job queue and the estimator.

Every request a user can get wrong ends as a 4xx JSON `{"detail": "..."}` that says what to change:
422 for malformed fields, 400 for settings that do not fit the image or model, 404 for unknown ids,
409 for results asked before they exist, 413/415 for uploads that are too large or not images, 429
when the queue is full. Requests carry ids and indices, never file paths.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import math
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from krypton.choices import Mode
from krypton.web import uploads
from krypton.web.catalog import Models, Picture, Pictures, default_catalog, default_rgb, predict, top_classes
from krypton.web.estimate import Estimator
from krypton.web.jobs import TERMINAL, JobQueue, NotFound, QueueFull
from krypton.web.limits import BodyLimit, SecurityHeaders
from krypton.web.sweep import Region
from krypton.web.tasks import Context, make_spec, occluded_prediction, result_json, result_npz, result_png, run

STATIC = Path(__file__).parent / "static"
PREVIEW_SIDE = 512  # longest side of the as-stored preview of a bundled image
ID = r"^[0-9a-f]{16}$"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1"]
JSON_LIMIT = 1024 * 1024


class NotReady(Exception):
    """A job's results were asked for before it finished."""


class Strict(BaseModel):
    """Request bodies: unknown fields refused, no type coercion (`true` is not the number 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


Colour = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)]
Id = Annotated[str, PathParam(pattern=ID)]
ImageId = Annotated[str, Field(pattern=ID)]


class DemoPick(Strict):
    demo: str = Field(max_length=64)
    index: int = Field(0, ge=0, le=100_000)


class RegionBody(Strict):
    x: int = Field(ge=0, le=100_000)
    y: int = Field(ge=0, le=100_000)
    width: int = Field(gt=0, le=100_000)
    height: int = Field(gt=0, le=100_000)


class DrillBody(Strict):
    rule: Literal["regions", "paper", "refine"] = "regions"
    fraction: float | None = Field(None, gt=0, le=1)  # two-stage rules only (default 0.25)
    speedup: float = Field(3.0, ge=1, le=1000)


class EstimateBody(Strict):
    image_id: ImageId
    patch: int = Field(ge=1, le=4096)
    stride: int = Field(ge=1, le=4096)
    tau: float | None = Field(None, gt=0, le=1)
    drilldown: DrillBody | None = None
    region: RegionBody | None = None


class JobBody(EstimateBody):
    fill: Colour | None = None
    target: int | None = Field(None, ge=0)
    mode: Mode = "exact"
    compare: bool = False


class PredictBody(Strict):
    mask: str = Field(max_length=4 * JSON_LIMIT // 5, description="base64 of the packed bit mask, row-major")
    fill: Colour | None = None


def create_app(
    catalog: dict[str, Any] | None = None,
    *,
    workers: int = 1,
    max_waiting: int = 8,
    allowed_hosts: list[str] | None = None,
    max_upload: int = uploads.MAX_BYTES,
    max_pixels: int = uploads.MAX_PIXELS,
    warm: bool = True,
) -> FastAPI:
    """The app. `catalog` maps names to demos (default: the bundled ones); `workers` jobs run at once;
    `warm` loads the default demo's model in the background at start-up (the first view waits less)."""
    ctx = Context(Models(catalog if catalog is not None else default_catalog()), Pictures(), Estimator())
    jobs = JobQueue(lambda job: run(job, ctx), workers=workers, max_waiting=max_waiting)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202
        if warm:  # load the page's default model while the browser is still opening the page
            threading.Thread(target=_warm_default_model, args=(ctx,), name="krypton-warm", daemon=True).start()
        yield
        jobs.close()

    app = FastAPI(title="krypton web demo", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx, app.state.jobs = ctx, jobs
    app.add_middleware(BodyLimit, default=JSON_LIMIT, limits={"/api/images/upload": max_upload})
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS)
    app.add_middleware(SecurityHeaders)
    _errors(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/demos")
    def demos() -> dict[str, Any]:
        return {"demos": ctx.models.listing(), "queue": jobs.stats()}

    @app.get("/api/queue")
    def queue_stats() -> dict[str, Any]:
        return jobs.stats()

    @app.post("/api/images/demo")
    def pick_demo(body: DemoPick) -> dict[str, Any]:
        images = ctx.models.images(body.demo)
        if body.index >= len(images):
            raise NotFound(
                f"demo {body.demo!r} has {len(images)} images (indices 0..{len(images) - 1}), not {body.index}"
            )
        image = images[body.index]
        return _prepare(ctx, body.demo, image.name, image.label, image.pixels())

    @app.get("/api/demos/{demo}/images/{index}/original.png")
    def original_png(
        demo: Annotated[str, PathParam(max_length=64)], index: Annotated[int, PathParam(ge=0, le=100_000)]
    ) -> Response:
        """A bundled image as stored, without its model: the page shows it while the model loads."""
        images = ctx.models.images(demo)
        if index >= len(images):
            raise NotFound(f"demo {demo!r} has {len(images)} images (indices 0..{len(images) - 1}), not {index}")
        return Response(_png(_thumbnail(images[index].pixels())), media_type="image/png")

    @app.post("/api/images/upload")
    async def upload(request: Request, demo: Annotated[str, Query(max_length=64)]) -> dict[str, Any]:
        ctx.models.demo(demo)
        uploads.check_content_type(request.headers.get("content-type"))
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > max_upload:
                raise uploads.UploadError(f"upload larger than the limit of {max_upload:,} bytes", 413)
        pixels = await run_in_threadpool(uploads.decode, bytes(body), max_pixels)
        return await run_in_threadpool(_prepare, ctx, demo, "upload", None, pixels)

    @app.get("/api/images/{image_id}/image.png")
    def image_png(image_id: Id) -> Response:
        return Response(_png(ctx.pictures.get(image_id).shown), media_type="image/png")

    @app.post("/api/images/{image_id}/predict")
    def brush(image_id: Id, body: PredictBody) -> dict[str, Any]:
        picture = ctx.pictures.get(image_id)
        loaded = ctx.models.get(picture.demo)
        mask = _mask(body.mask, tuple(picture.tensor.shape[1:]))
        probs = occluded_prediction(picture, loaded, mask, body.fill)
        return {
            "top": top_classes(probs, loaded),
            "occluded_pixels": int(mask.sum()),
            "probabilities": [round(float(p), 6) for p in probs],
        }

    @app.post("/api/estimate")
    def estimate(body: EstimateBody) -> dict[str, Any]:
        spec, picture, loaded = make_spec(ctx, **_job_args(body))
        found = ctx.estimator.estimate(
            picture.demo, loaded, picture.tensor, spec.patch, spec.stride, body.tau, spec.drilldown, spec.region
        )
        assert found is not None  # None only for cached_only lookups
        return found

    @app.post("/api/jobs", status_code=202)
    def submit(body: JobBody) -> dict[str, Any]:
        spec, picture, loaded = make_spec(ctx, **_job_args(body))
        info: dict[str, Any] = {
            "probability": float(picture.probs[spec.target]),
            "target": spec.target,
            "target_label": loaded.label(spec.target),
            "mode": spec.mode,
            "phases": spec.phases,
            "patch": spec.patch,
            "stride": spec.stride,
        }
        known = ctx.estimator.estimate(
            picture.demo,
            loaded,
            picture.tensor,
            spec.patch,
            spec.stride,
            spec.tau,
            spec.drilldown,
            spec.region,
            cached_only=True,
        )
        if known is not None:
            info["estimates"] = known["modes"]
        job = jobs.submit({"spec": spec, "picture": picture, "loaded": loaded}, info)
        return job.snapshot(jobs.ahead(job))

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: Id) -> dict[str, Any]:
        job = jobs.get(job_id)
        return job.snapshot(jobs.ahead(job))

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: Id) -> dict[str, Any]:
        job = jobs.cancel(job_id)
        return job.snapshot(jobs.ahead(job))

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: Id, request: Request) -> StreamingResponse:
        job = jobs.get(job_id)

        async def stream():  # noqa: ANN202
            last = None
            job.listeners += 1
            try:
                while True:
                    snap = job.snapshot(jobs.ahead(job))
                    key = (snap["version"], snap["ahead"])
                    if key != last:
                        last = key
                        kind = "end" if snap["state"] in TERMINAL else "update"
                        yield f"event: {kind}\ndata: {json.dumps(snap)}\n\n"
                    if snap["state"] in TERMINAL or await request.is_disconnected():
                        return
                    await asyncio.sleep(0.2)
            finally:
                job.listeners -= 1
                # the tab went away (closed, reloaded): its job would hold a worker for nobody
                asyncio.get_running_loop().call_later(ABANDONED_S, _cancel_if_abandoned, jobs, job)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @app.get("/api/jobs/{job_id}/result.png")
    def download_png(job_id: Id, phase: Mode | None = None) -> Response:
        content = result_png(_done(jobs, job_id), phase)
        return Response(content, media_type="image/png", headers=_attachment(f"krypton-{job_id}.png"))

    @app.get("/api/jobs/{job_id}/result.json")
    def download_json(job_id: Id, phase: Mode | None = None) -> Response:
        content = json.dumps(result_json(_done(jobs, job_id), phase), indent=1)
        return Response(content, media_type="application/json", headers=_attachment(f"krypton-{job_id}.json"))

    @app.get("/api/jobs/{job_id}/result.npz")
    def download_npz(job_id: Id, phase: Mode | None = None) -> Response:
        content = result_npz(_done(jobs, job_id), phase)
        return Response(content, media_type="application/octet-stream", headers=_attachment(f"krypton-{job_id}.npz"))

    return app


def _warm_default_model(ctx: Context) -> None:
    """The first demo whose files are installed is the page's default: load its model now. Failures are
    left for the page's own request to report."""
    for entry in ctx.models.listing():
        if entry.get("available"):
            try:
                ctx.models.get(entry["name"])
            except Exception:  # noqa: BLE001 - reported when the page asks for it
                pass
            return


ABANDONED_S = 5.0  # a job nobody has followed for this long after its page left is cancelled


def _cancel_if_abandoned(jobs: JobQueue, job: Any) -> None:
    if job.listeners == 0 and job.state not in TERMINAL:
        jobs.cancel(job.id)


def _errors(app: FastAPI) -> None:
    def reply(status: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for error in exc.errors():
            if error.get("type") == "json_invalid":
                reason = error.get("ctx", {}).get("error", "parse error")
                return reply(422, f"the request body is not valid JSON ({reason})")
            loc = list(error.get("loc", ()))
            if loc and loc[0] in ("body", "query", "path", "header"):
                loc = loc[1:]
            where = ".".join(str(p) for p in loc)
            parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
        return reply(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(uploads.UploadError)
    async def bad_upload(_: Request, exc: uploads.UploadError) -> JSONResponse:
        return reply(exc.status, str(exc))

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, exc: ValueError) -> JSONResponse:
        return reply(400, " ".join(str(exc).split()) or "invalid request")

    @app.exception_handler(NotFound)
    async def unknown(_: Request, exc: NotFound) -> JSONResponse:
        return reply(404, str(exc.args[0]) if exc.args else "not found")

    @app.exception_handler(NotReady)
    async def not_ready(_: Request, exc: NotReady) -> JSONResponse:
        return reply(409, str(exc))

    @app.exception_handler(QueueFull)
    async def full(_: Request, exc: QueueFull) -> JSONResponse:
        return reply(429, str(exc))

    @app.exception_handler(Exception)
    async def bug(_: Request, exc: Exception) -> JSONResponse:  # a server bug, never a user's mistake
        return reply(500, f"internal error: {type(exc).__name__}: {exc}")


def _prepare(ctx: Context, demo: str, name: str, label: str | None, pixels: np.ndarray) -> dict[str, Any]:
    """Preprocess for the demo's model, predict, remember; the page gets the id and the prediction."""
    loaded = ctx.models.get(demo)
    assert loaded.preprocess is not None  # demos say how their inputs are prepared
    tensor, shown = loaded.preprocess(pixels)
    picture = ctx.pictures.add(demo, name, label, tensor, shown, predict(loaded.module, tensor))
    return _picture_json(picture, loaded)


def _picture_json(picture: Picture, loaded: Any) -> dict[str, Any]:
    probs = picture.probs
    return {
        "id": picture.id,
        "demo": picture.demo,
        "name": picture.name,
        "label": picture.label,
        "model": loaded.name,
        "height": int(picture.tensor.shape[1]),
        "width": int(picture.tensor.shape[2]),
        "channels": int(picture.tensor.shape[0]),
        "top": top_classes(probs, loaded),
        "classes": [loaded.label(i) for i in range(probs.numel())],
        "probabilities": [round(float(p), 6) for p in probs],
        "default_fill": default_rgb(loaded),
        "preprocess": loaded.preprocess.describe(),
    }


def _job_args(body: EstimateBody) -> dict[str, Any]:
    args: dict[str, Any] = {
        "image_id": body.image_id,
        "patch": body.patch,
        "stride": body.stride,
        "tau": body.tau,
        "drilldown": body.drilldown.model_dump(exclude_none=True) if body.drilldown else None,
        "region": Region(**body.region.model_dump()) if body.region else None,
    }
    if isinstance(body, JobBody):
        args.update(fill=body.fill, target=body.target, mode=body.mode, compare=body.compare)
    else:
        args["mode"] = "approximate" if (body.tau is not None or body.drilldown is not None) else "exact"
    return args


def _mask(text: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        packed = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("mask must be base64 text (packed bits, one per model-input pixel)") from None
    expected = math.ceil(shape[0] * shape[1] / 8)
    if len(packed) != expected:
        raise ValueError(
            f"mask has {len(packed)} bytes; a {shape[1]}x{shape[0]} image needs {expected} "
            "(one bit per pixel, row-major, packed 8 per byte)"
        )
    bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8))[: shape[0] * shape[1]]
    return bits.reshape(shape).astype(bool)


def _done(jobs: JobQueue, job_id: str) -> Any:
    job = jobs.get(job_id)
    if job.state != "done":
        raise NotReady(f"job {job_id} is {job.state}: results can be downloaded once it is done")
    return job


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


def _thumbnail(pixels: np.ndarray, largest: int = PREVIEW_SIDE) -> np.ndarray:
    """At most `largest` pixels on the longer side (a preview needs no more than the page shows)."""
    from PIL import Image

    height, width = pixels.shape[:2]
    if max(height, width) <= largest:
        return pixels
    factor = largest / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    array = (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32).reshape(size[1], size[0], -1) / 255.0


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    array = (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
