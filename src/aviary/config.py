"""Settings: one pydantic-settings object, read from `AVIARY_*` environment variables (or a mapping).

Nothing reads the environment at import time: `Settings()` is built by the CLI's `main()` or the app
factory and passed down. Tests pass values directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from aviary.audio import AudioLimits, IsolatedDecoder
    from aviary.engine.base import ModelInfo
    from aviary.engine.longform import Chunking

DEFAULT_MODEL = "parakeet-tdt-0.6b-v2"
DEFAULT_ALIASES = {"canary": "canary-1b-v2"}
"""Besides `parakeet`, which means the default model (the seed's `MODEL_NAME` set what it loads)."""


class Settings(BaseSettings):
    """Every knob of Aviary, with defaults that run a single machine with no configuration."""

    model_config = SettingsConfigDict(
        env_prefix="AVIARY_",
        env_nested_delimiter="__",
        extra="ignore",
        populate_by_name=True,
        allow_inf_nan=False,  # an infinite cap or interval is refused at start, not at the first request
    )

    model: str = Field(
        default=DEFAULT_MODEL,
        validation_alias=AliasChoices("AVIARY_MODEL", "MODEL_NAME"),  # MODEL_NAME: the seed's variable
        description="The default model: loaded at start-up.",
    )
    host: str = Field(default="127.0.0.1", description="Address the server listens on.")
    port: int = Field(
        default=8000,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("AVIARY_PORT", "PORT"),  # PORT: the seed's variable
        description="Port the server listens on.",
    )
    engine: Literal["onnx", "nemo"] = Field(
        default="onnx",
        description="Engine for registry names, and for a model directory that also holds one .nemo file: "
        "onnxruntime (default) or NeMo (needs the nemo extra).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Where models run; auto prefers CUDA.")
    threads: int = Field(default=0, ge=0, description="CPU threads per inference (0: all cores).")
    quantization: str | None = Field(default=None, description="Use `*.<quantization>.onnx` files, e.g. int8.")
    aliases: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ALIASES),
        description="Short model names and their targets (`parakeet`: the default model, unless set here).",
    )
    offline: bool = Field(default=False, description="Never download; only use models already cached or on disk.")
    cache_dir: Path | None = Field(default=None, description="Hugging Face cache directory (default: HF_HOME's).")
    max_audio_seconds: float = Field(default=36_000.0, gt=0, description="Longest audio accepted (10 h).")
    max_upload_bytes: int = Field(default=1 << 30, gt=0, description="Largest upload or input file (1 GiB).")
    max_decoded_samples: int = Field(
        default=36_000 * 48_000 * 2,
        gt=0,
        description="Most samples decoded per input before resampling, all channels (10 h of 48 kHz stereo).",
    )
    decode_timeout: float = Field(default=600.0, gt=0, description="Seconds a decoder may work on one input.")
    decoder_processes: int = Field(
        default=2, ge=1, description="Idle decoder processes kept ready at least (more while many were busy lately)."
    )
    decoder_idle_seconds: float = Field(
        default=600.0,
        gt=0,
        description="How long the decoder pool remembers its busiest moment: as many processes as were busy at once "
        "within it stay ready (about 28 MB each), so a crowd that comes back does not start them again.",
    )
    decoder_memory_mb: int | None = Field(
        default=None, gt=0, description="Address-space limit per decoder process (default: 1 GiB + 2x the upload cap)."
    )

    workers: int = Field(
        default=16,
        ge=1,
        description="Requests (and, separately, jobs) transcribed at the same time: each decodes its audio and sends "
        "its chunks to the model's batcher, which runs them in batches of up to `batch_size`.",
    )
    batch_size: int = Field(default=16, ge=1, le=256, description="Most utterances or chunks in one model call.")
    batch_wait_ms: float = Field(
        default=10.0,
        ge=0,
        le=1000,
        description="Under load, how long a batch may wait to fill (an item at an idle server runs at once).",
    )
    batch_max_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Most audio in one model call, padded (items x the longest): how long one batch runs, so how "
        "long a request can wait behind another's. Default: 160 s on the CPU (16 x 10 s, or 5 x 30 s chunks), "
        "480 s on CUDA; for the NeMo engine on the CPU, the encoder's limit below.",
    )
    encoder_max_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Most padded audio the ONNX encoder takes at once, which bounds its memory: a larger batch is "
        "encoded in parts and decoded as one. Default: 60 s on the CPU (activations live in RAM: 0.2 GB + "
        "12 MB per second for Parakeet 0.6B), the whole batch on CUDA.",
    )
    warm_up: bool = Field(
        default=True,
        description="Run the default model once on a chunk of silence before reporting healthy, so the first "
        "request does not pay for first-run set-up (memory arena growth; on CUDA, library and kernel loading).",
    )
    chunk_seconds: float = Field(
        default=30.0,
        ge=5.0,
        le=300.0,
        validation_alias=AliasChoices("AVIARY_CHUNK_SECONDS", "AVIARY_JOB_CHUNK_SECONDS"),
        description="Long audio is cut at pauses into chunks of at most this length (jobs checkpoint each chunk).",
    )
    chunk_overlap_seconds: float = Field(
        default=2.0,
        ge=0.0,
        le=10.0,
        description="Where nobody paused for a whole chunk, two chunks share this much audio (resolved by word times).",
    )
    vad_threshold: float = Field(
        default=0.5, gt=0.15, lt=1.0, description="Silero VAD's speech probability from which audio counts as speech."
    )
    max_queue: int = Field(
        default=64, ge=0, description="Requests that may wait for a worker; past that the API answers 503 server_busy."
    )
    upload_idle_seconds: float = Field(
        default=60.0,
        gt=0,
        description="An upload from which nothing arrives for this long is refused (408 upload_timeout).",
    )
    upload_dir: Path | None = Field(
        default=None, description="Where uploads are written while they are processed (default: the system temp dir)."
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Keys clients must send as 'Authorization: Bearer <key>' (comma-separated); none: no keys.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"], description="Origins browsers may call the API from (comma-separated)."
    )
    root_path: str = Field(
        default="",
        description="The path prefix a reverse proxy serves Aviary under and strips (e.g. '/asr'), so that the "
        "API docs link through it ('aviary serve'; with uvicorn itself, its --root-path).",
    )
    data_dir: Path = Field(
        default_factory=lambda: Path.home() / ".local" / "share" / "aviary",
        description="Jobs' audio, and the embedded SQLite database, live here.",
    )
    database_url: str | None = Field(
        default=None,
        description="Jobs database: sqlite:///path or postgresql://... (default: SQLite in data_dir; "
        "PostgreSQL for several servers or workers).",
    )
    executor_id: str | None = Field(
        default=None,
        description="This process's stable name among the job workers (default: the host name); "
        "a restarted process resumes the jobs its executor id had running.",
    )
    run_jobs: bool = Field(
        default=True,
        description="This process runs queued jobs (the embedded worker). Off for an API in front of `aviary worker`s.",
    )
    job_poll_seconds: float | None = Field(
        default=None,
        ge=0.01,
        le=60.0,
        description="How often a job worker looks for queued jobs (each look is a few database queries). Default: "
        "0.25 s on SQLite (one worker; at 20 ms the looks took a fifth of a core from inference), 0.02 s on "
        "PostgreSQL, where DBOS doubles the interval after each look that collides with another worker's, up "
        "to 120 s, and only then decays it: from a small base a few collisions cost milliseconds, not minutes. "
        "Stored with the queue, so the last worker to start sets it for all.",
    )
    heartbeat_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often a process checks that the jobs database answers (and a job worker says it is alive).",
    )
    executor_timeout: float = Field(
        default=15.0, gt=0, description="Seconds of silence after which a worker's jobs are resumed by the others."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="Signs job webhooks (Standard Webhooks, `whsec_<base64>`); none: no webhooks."
    )
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts webhooks may go to (comma-separated), private ones included; none: any public host.",
    )
    job_retention_seconds: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="Ended jobs (their rows and results) are purged after this long."
    )
    openai_model_aliases: bool = Field(
        default=True,
        description="OpenAI model names (whisper-1, gpt-4o-transcribe, ...) mean the default model on /v1.",
    )

    def audio_limits(self) -> AudioLimits:
        """The decoding caps these settings give."""
        from aviary.audio import AudioLimits

        return AudioLimits(
            max_seconds=self.max_audio_seconds,
            max_bytes=self.max_upload_bytes,
            max_input_samples=self.max_decoded_samples,
            timeout_seconds=self.decode_timeout,
        )

    def batch_seconds(self, device: str, *, splits: bool = True) -> float:
        """The padded audio one batch may hold on `device` ("cpu" or "cuda").

        `splits`: the engine encodes a batch in parts of `encoder_max_seconds` (ONNX); one that
        cannot (NeMo) gets batches no larger than that bound on the CPU.
        """
        if self.batch_max_seconds is not None:
            return self.batch_max_seconds
        if device == "cuda":
            return 480.0
        from aviary.engine.onnx import CPU_ENCODER_SECONDS

        return 160.0 if splits else self.encoder_max_seconds or CPU_ENCODER_SECONDS

    def chunking(self, model: ModelInfo | None = None) -> Chunking:
        """How long audio is cut for `model`: no overlap without word times, chunks no longer than it takes."""
        from aviary.engine.longform import Chunking

        overlap = self.chunk_overlap_seconds if model is None or model.timestamps else 0.0
        longest = self.chunk_seconds
        if model is not None and model.max_seconds is not None:
            longest = min(longest, model.max_seconds)
        return Chunking(max_seconds=longest, overlap_seconds=overlap, threshold=self.vad_threshold)

    def audio_decoder(self) -> IsolatedDecoder:
        """A decoder in child processes with these settings' caps (the caller closes it)."""
        from aviary.audio import IsolatedDecoder

        return IsolatedDecoder(
            self.audio_limits(),
            idle=self.decoder_processes,
            memory_mb=self.decoder_memory_mb,
            pool_memory_seconds=self.decoder_idle_seconds,
        )

    @field_validator("api_keys", "cors_origins", "webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        """A comma-separated string (as environment variables carry lists) is a list."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_when_set(cls, value: object) -> object:
        """AVIARY_API_KEYS=" , " (set, yet no key) would serve without any: refused rather than guessed."""
        if isinstance(value, str) and value.strip() and not [p for p in value.split(",") if p.strip()]:
            msg = "holds separators but no key (leave it unset or empty for no keys)"
            raise ValueError(msg)
        return value

    @field_validator("database_url", mode="after")
    @classmethod
    def _postgresql_scheme(cls, value: str | None) -> str | None:
        """`postgres://` (as Heroku and many tools write it) is `postgresql://` to SQLAlchemy."""
        if value is not None and value.startswith("postgres://"):
            return "postgresql://" + value.removeprefix("postgres://")
        return value

    @field_validator("root_path", mode="after")
    @classmethod
    def _one_leading_slash(cls, value: str) -> str:
        """'asr/', '/asr' and '/asr/' are all '/asr'; '/' is no prefix."""
        parts = value.strip().strip("/")
        return f"/{parts}" if parts else ""

    @field_validator("aliases", mode="after")
    @classmethod
    def _keep_default_aliases(cls, aliases: dict[str, str]) -> dict[str, str]:
        """Configured aliases add to or override the defaults; they never silently drop one."""
        return {**DEFAULT_ALIASES, **aliases}

    @model_validator(mode="after")
    def _parakeet_is_the_default_model(self) -> Settings:
        """`parakeet` stands for the configured model, as in the seed, unless configured itself."""
        if "parakeet" not in self.aliases:
            aliased = self.model in self.aliases or self.model == "parakeet"
            self.aliases["parakeet"] = DEFAULT_MODEL if aliased else self.model
        return self

    def jobs_database_url(self) -> str:
        """The jobs database: `database_url`, or SQLite in `data_dir`."""
        return self.database_url or f"sqlite:///{self.data_dir / 'aviary.sqlite'}"

    def job_poll(self) -> float:
        """Seconds between a worker's looks for queued jobs (see `job_poll_seconds`)."""
        if self.job_poll_seconds is not None:
            return self.job_poll_seconds
        return 0.25 if self.jobs_database_url().startswith("sqlite") else 0.02
