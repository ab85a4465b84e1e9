"""Aviary's one error tree. Every error has a stable machine `code`; none carries an HTTP status.

```
AviaryError
├── ModelError
│   ├── ModelNotFoundError        model_not_found      (also LookupError: no such name)
│   ├── ModelUnavailableError     model_unavailable    (known, but not on disk and cannot be fetched)
│   └── InvalidModelError         invalid_model        (files present but not a usable model)
├── RequestError                                       (also ValueError: the caller asked for something wrong)
│   ├── UnsupportedLanguageError  unsupported_language
│   ├── UnsupportedTaskError      unsupported_task
│   ├── InvalidOptionError        invalid_option
│   ├── MalformedRequestError     invalid_request      (a body that is not the form it claims to be)
│   └── FieldTooLongError         invalid_request      (text fields longer than the server reads)
├── AudioError                                         (also ValueError: the input media is unusable)
│   ├── EmptyFileError            empty_file
│   ├── UnsupportedMediaError     unsupported_media    (not media; a container outside the whitelist)
│   │   ├── UnsupportedCodecError       unsupported_media
│   │   ├── UnsupportedSampleRateError  unsupported_media
│   │   └── UnsupportedChannelsError    unsupported_media
│   ├── InvalidAudioError         invalid_audio        (corrupt or truncated)
│   │   ├── NoAudioStreamError    invalid_audio        (media without an audio stream)
│   │   ├── NoSamplesError        invalid_audio        (an audio stream that decodes to nothing)
│   │   ├── TruncatedAudioError   invalid_audio        (ends well before its declared length)
│   │   ├── DecoderFailedError    invalid_audio        (the decoder process died on it)
│   │   └── DecoderMemoryError    invalid_audio        (decoding needed more memory than allowed)
│   ├── AudioTooLongError         audio_too_long
│   ├── PayloadTooLargeError      payload_too_large
│   └── DecodeTimeoutError        decode_timeout       (also TimeoutError)
├── DecoderUnavailableError       decoder_unavailable  (a decoder process cannot start: the server's fault)
├── InferenceError                inference_failed     (also RuntimeError: the engine failed)
├── ServerBusyError               server_busy          (every inference slot and queue place is taken)
├── AuthenticationError           invalid_api_key      (a missing or wrong API key)
└── JobError                                           (the asynchronous jobs)
    ├── JobNotFoundError          job_not_found        (also LookupError)
    ├── JobNotFinishedError       job_not_finished     (its result was asked for too early)
    ├── JobCancelledError         job_cancelled        (its result was asked for; it has none)
    ├── JobFinishedError          job_finished         (cancel of a job that already ended)
    ├── IdempotencyConflictError  idempotency_conflict (a reused Idempotency-Key with another file)
    └── JobFailedError            (the job's own code) (its result was asked for; it failed)
```

Each error builds its own message from its arguments, so a raise is one line, and messages are
written for users: what was wrong, in plain words, never a traceback or a server path.
"""

from __future__ import annotations


class AviaryError(Exception):
    """The root of every error Aviary raises on purpose."""

    code = "aviary_error"
    param: str | None = None
    """The request field the error is about, when there is one (OpenAI's `error.param`)."""


class ModelError(AviaryError):
    """A model cannot be resolved or loaded."""

    code = "model_error"


class ModelNotFoundError(ModelError, LookupError):
    """No model of that name, repository or path exists."""

    code = "model_not_found"

    def __init__(self, model: str, known: tuple[str, ...] = ()) -> None:
        """Name the unknown model and, when given, the known names."""
        hint = f"; known models: {', '.join(known)}" if known else ""
        super().__init__(f"The model '{model}' does not exist{hint}.")
        self.model = model
        self.param = "model"


class ModelUnavailableError(ModelError):
    """A known model is not on this machine and cannot be downloaded now."""

    code = "model_unavailable"

    def __init__(self, model: str, reason: str, *, engine: str = "onnx") -> None:
        """Name the model, why it is unavailable, and what to do (the pull for the files of `engine`)."""
        pull = f"aviary models pull {model}" + (f" --engine {engine}" if engine != "onnx" else "")
        super().__init__(
            f"The model '{model}' is not available: {reason}. Download it with `{pull}` "
            "while online, or point at a local model directory or .nemo file."
        )
        self.model = model


class InvalidModelError(ModelError):
    """Model files are present but are not a model this engine can run."""

    code = "invalid_model"

    def __init__(self, model: str, reason: str) -> None:
        """Name the model and what is wrong with its files."""
        super().__init__(f"The model '{model}' cannot be loaded: {reason}.")
        self.model = model


class RequestError(AviaryError, ValueError):
    """The caller asked for something the model cannot do."""

    code = "invalid_request"


class UnsupportedLanguageError(RequestError):
    """The language is not one the model speaks."""

    code = "unsupported_language"

    def __init__(self, language: str, model: str, supported: tuple[str, ...]) -> None:
        """Name the language, the model and its languages."""
        super().__init__(
            f"The model '{model}' does not support the language '{language}'; supported: {', '.join(supported)}."
        )
        self.language = language
        self.param = "language"


class UnsupportedTranslationError(RequestError):
    """Canary translates to and from English, not between two other languages."""

    code = "unsupported_language"

    def __init__(self, source: str, target: str, model: str) -> None:
        """Name the pair and the model."""
        super().__init__(f"The model '{model}' translates to and from English only, not from '{source}' to '{target}'.")
        self.language = target
        self.param = "target_language"


class UnsupportedTaskError(RequestError):
    """The model cannot do this task (e.g. translation on a transcription-only model)."""

    code = "unsupported_task"

    def __init__(self, task: str, model: str) -> None:
        """Name the task and the model."""
        hint = " (Canary models translate: model 'canary')" if task == "translate" else ""
        super().__init__(f"The model '{model}' cannot {task}{hint}.")


class InvalidOptionError(RequestError):
    """An option has a value outside its domain."""

    code = "invalid_option"

    def __init__(self, option: str, value: object, expected: str) -> None:
        """Name the option, the value given (None: the option is missing) and what is expected."""
        super().__init__(
            f"Missing {option}: expected {expected}."
            if value is None
            else f"Invalid {option} {value!r}: expected {expected}."
        )
        self.param = option


class MalformedRequestError(RequestError):
    """A request body that cannot be parsed as what it claims to be."""

    code = "invalid_request"

    def __init__(self, reason: str) -> None:
        """Say what is wrong with the body."""
        super().__init__(f"The request body is malformed: {reason}.")


class FieldTooLongError(RequestError):
    """The form's text fields hold more than the server reads."""

    code = "invalid_request"

    def __init__(self, field: str, limit: int) -> None:
        """Name the field that passed the limit."""
        super().__init__(f"The field '{field}' is too long: text fields may hold {limit} bytes in all.")
        self.param = field


class UploadTimeoutError(RequestError, TimeoutError):
    """The client stopped sending its upload before the body ended."""

    code = "upload_timeout"
    param = "file"

    def __init__(self, idle_seconds: float) -> None:
        """Name the wait."""
        super().__init__(f"The upload stalled: nothing arrived for {idle_seconds:g} seconds.")


class AudioError(AviaryError, ValueError):
    """The input media cannot be turned into audio."""

    code = "invalid_audio"
    param = "file"

    @classmethod
    def rebuild(cls, kind: str, message: str) -> AudioError:
        """The error of class name `kind` with `message` (how a decoder process's error crosses back)."""
        kinds = {cls.__name__: cls}
        pending = [cls]
        while pending:
            for sub in pending.pop().__subclasses__():
                kinds[sub.__name__] = sub
                pending.append(sub)
        error = Exception.__new__(kinds.get(kind, InvalidAudioError))
        Exception.__init__(error, message)
        return error


class EmptyFileError(AudioError):
    """The upload holds no bytes."""

    code = "empty_file"

    def __init__(self) -> None:
        """Say the file is empty."""
        super().__init__("The file is empty.")


class UnsupportedMediaError(AudioError):
    """Not audio, or a container or codec Aviary does not accept."""

    code = "unsupported_media"

    def __init__(self, message: str = "The file is not a supported audio or video format.") -> None:
        """Say what about the file Aviary does not accept."""
        super().__init__(message)


class UnsupportedCodecError(UnsupportedMediaError):
    """An audio codec outside the decoder whitelist."""

    def __init__(self, codec: str) -> None:
        """Name the codec."""
        super().__init__(f"The audio codec {codec!r} is not supported.")


class UnsupportedSampleRateError(UnsupportedMediaError):
    """A sample rate outside what Aviary decodes."""

    def __init__(self, rate: int, low: int, high: int) -> None:
        """Name the rate and the range accepted."""
        super().__init__(f"A sample rate of {rate} Hz is not supported ({low} to {high} Hz).")


class UnsupportedChannelsError(UnsupportedMediaError):
    """More audio channels than Aviary decodes."""

    def __init__(self, channels: int, most: int) -> None:
        """Name the count and the most accepted."""
        super().__init__(f"{channels} audio channels are not supported (1 to {most}).")


class InvalidAudioError(AudioError):
    """Audio that is corrupt, truncated, or holds no samples."""

    code = "invalid_audio"

    def __init__(self, message: str = "The audio is corrupt or truncated.") -> None:
        """Say what was wrong with the audio (subclasses say it more precisely)."""
        super().__init__(message)


class NoAudioStreamError(InvalidAudioError):
    """Media without an audio stream (e.g. a silent video)."""

    def __init__(self) -> None:
        """Say there is no audio stream."""
        super().__init__("The file has no audio stream.")


class NoSamplesError(InvalidAudioError):
    """An audio stream that decodes to nothing."""

    def __init__(self) -> None:
        """Say the audio is empty."""
        super().__init__("The audio holds no samples.")


class TruncatedAudioError(InvalidAudioError):
    """Audio that ends well before the length its container declares."""

    def __init__(self, declared: float, found: float) -> None:
        """Name both lengths."""
        super().__init__(f"The audio is truncated: the file declares {declared:.1f} s but holds {found:.1f} s.")


class DecoderFailedError(InvalidAudioError):
    """The decoder process died or answered nonsense on this input."""

    def __init__(self) -> None:
        """Say the decoder failed, without its internals."""
        super().__init__("The audio decoder failed on this file.")


class DecoderMemoryError(InvalidAudioError):
    """Decoding needed more memory than a decoder may use."""

    def __init__(self) -> None:
        """Say the memory limit was reached."""
        super().__init__("Decoding the audio needed more memory than allowed.")


class AudioTooLongError(AudioError):
    """The audio is longer than the configured maximum."""

    code = "audio_too_long"

    def __init__(self, limit_seconds: float, *, limit_samples: int | None = None) -> None:
        """Name the limit that was passed: seconds, or the samples decoded before resampling."""
        if limit_samples is not None:
            super().__init__(
                f"The audio holds more than {limit_samples} samples (all channels, at its own rate), "
                "the most this server decodes of one file."
            )
        else:
            super().__init__(f"The audio is longer than the maximum of {limit_seconds:g} seconds.")


class PayloadTooLargeError(AudioError):
    """The input is larger than the configured maximum."""

    code = "payload_too_large"

    def __init__(self, limit_bytes: int) -> None:
        """Name the limit."""
        super().__init__(f"The file is larger than the maximum of {limit_bytes} bytes.")


class DecodeTimeoutError(AudioError, TimeoutError):
    """Decoding took longer than allowed."""

    code = "decode_timeout"

    def __init__(self, limit_seconds: float) -> None:
        """Name the limit."""
        super().__init__(f"Decoding the audio took longer than {limit_seconds:g} seconds.")


class OutputError(AviaryError, OSError):
    """A transcript cannot be written where it was asked to go (the CLI's `--output-dir`)."""

    code = "unwritable_output"

    def __init__(self, target: str, reason: str) -> None:
        """Name the file or directory and the system's reason."""
        super().__init__(f"Cannot write {target}: {reason}.")


class InferenceError(AviaryError, RuntimeError):
    """The engine failed while running a model."""

    code = "inference_failed"

    def __init__(self, model: str) -> None:
        """Name the model (the cause is chained, not shown)."""
        super().__init__(f"The model '{model}' failed while transcribing.")


class DecoderUnavailableError(AviaryError):
    """A decoder process exited before it was ready, whatever the input: the server cannot decode now."""

    code = "decoder_unavailable"

    def __init__(self) -> None:
        """Say what failed, and the likeliest cause."""
        super().__init__(
            "The audio decoder could not start: its process exited before it was ready "
            "(is AVIARY_DECODER_MEMORY_MB too small for it?)."
        )


class ServerBusyError(AviaryError):
    """Every inference slot and every queue place is taken; the caller should retry later."""

    code = "server_busy"

    def __init__(self, retry_after: int) -> None:
        """Say when to retry, in whole seconds."""
        super().__init__(f"The server is busy; retry in {retry_after} s.")
        self.retry_after = retry_after


class AuthenticationError(AviaryError):
    """The request carries no API key, or one that is not configured."""

    code = "invalid_api_key"

    def __init__(self) -> None:
        """Say how to authenticate, without echoing what was sent."""
        super().__init__("A valid API key is required: send it as 'Authorization: Bearer <key>'.")


class DatabaseUnavailableError(AviaryError):
    """The jobs database cannot be reached or used."""

    code = "database_unavailable"

    def __init__(self, url: str, reason: str) -> None:
        """Name the database (its URL without a password) and why."""
        super().__init__(f"The jobs database {url} cannot be used: {reason}.")


class JobError(AviaryError):
    """Something about an asynchronous job."""

    code = "job_error"


class JobNotFoundError(JobError, LookupError):
    """No job has that id (or it was deleted)."""

    code = "job_not_found"

    def __init__(self) -> None:
        """The original server's words."""
        super().__init__("Job not found")


class JobNotFinishedError(JobError):
    """The job is still pending or processing."""

    code = "job_not_finished"

    def __init__(self) -> None:
        """The original server's words."""
        super().__init__("Job not yet completed")


class JobCancelledError(JobError):
    """The job was cancelled, so it has no result."""

    code = "job_cancelled"

    def __init__(self) -> None:
        """The original server's words."""
        super().__init__("Job was cancelled")


class JobFinishedError(JobError):
    """The job already ended (completed, failed or cancelled): there is nothing to cancel."""

    code = "job_finished"

    def __init__(self, status: str) -> None:
        """Name the job's state."""
        super().__init__(f"Job already {status}")


class JobFailedError(JobError):
    """The job failed; its code is the failure's own (e.g. `unsupported_media`)."""

    def __init__(self, message: str, code: str) -> None:
        """The original server's words, with the failure's message and code."""
        super().__init__(f"Job failed: {message}")
        self.code = code


class IdempotencyConflictError(JobError):
    """An `Idempotency-Key` already used for a different file, or the same file with other options."""

    code = "idempotency_conflict"

    def __init__(self, *, same_file: bool = False) -> None:
        """Say what differs from the request that first used the key: its file, or (`same_file`) its options."""
        what = "the same file but other options" if same_file else "a different file"
        super().__init__(f"This Idempotency-Key was already used with {what}.")
