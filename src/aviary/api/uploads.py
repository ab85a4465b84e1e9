"""Multipart uploads streamed to a named temporary file, with the size cap enforced as bytes arrive.

Starlette's own form parsing spools files into anonymous temporary files, which a decoder process
cannot open by name, and only caps non-file parts. Here python-multipart's streaming parser feeds
the `file` part straight into a file in the upload directory (at most `_FLUSH_BYTES` held in memory),
and small text fields into a bounded dict:
- a declared `Content-Length` over the cap is refused (413) before a byte of the body is read;
- otherwise the upload is refused as soon as the streamed file passes the cap;
- an upload from which nothing arrives for `idle_seconds` is refused (408), so a client whose
  connection died without closing (a phone that left the network) does not hold its place for ever;
- the file is removed when the `receive_form` block ends, on every path: success, errors, and a
  client that disconnects mid-upload.

The part named like the file field is the file even without a `filename` (`curl -F "file=<a.wav"`
sends one so). Its name is read as clients write it: RFC 5987 `filename*` first (.NET sends it beside
an RFC 2047 `=?utf-8?B?...?=` `filename` for any name that is not ASCII), encoded words decoded.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.utils import collapse_rfc2231_value
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from aviary.errors import FieldTooLongError, MalformedRequestError, PayloadTooLargeError, UploadTimeoutError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request

__all__ = ["FIELD_BYTES", "Form", "Upload", "client_gone", "receive_form"]

FIELD_BYTES: Final = 64 * 1024
"""Most bytes of all text fields together (model names, languages, prompts)."""
_MAX_FIELDS: Final = 64
_FLUSH_BYTES: Final = 1 << 20
_NO_NAME: Final = "a part without a form-data name"
_TOO_MANY: Final = f"more than {_MAX_FIELDS} fields"
_NO_BOUNDARY: Final = "multipart/form-data without a boundary"
_BAD_LENGTH: Final = "Content-Length is not a number"
_NOT_MULTIPART: Final = "it is not valid multipart/form-data"


@dataclass(frozen=True)
class Upload:
    """The uploaded file, on disk for as long as the `receive_form` block runs."""

    path: Path
    filename: str
    content_type: str | None
    size: int


@dataclass
class Form:
    """Text fields (every value, in order) and the file, if one was sent."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    file: Upload | None = None

    def values(self) -> dict[str, str | list[str]]:
        """Fields as a validator takes them: the last value, or every value of a `name[]` list field."""
        result: dict[str, str | list[str]] = {}
        for name, values in self.fields.items():
            if name.endswith("[]"):
                result[name[:-2]] = values
            else:
                result[name] = values[-1]
        return result


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    content_type: str | None = None
    data: bytearray = field(default_factory=bytearray)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class _Receiver:
    """Turns parser callbacks into a `Form`; the file part's bytes wait in `pending` for the caller to write."""

    def __init__(self, path: Path, limit: int, file_field: str) -> None:
        self.form = Form()
        self._path, self._limit, self._file_field = path, limit, file_field
        self._part = _Part()
        self._field = b""
        self._value = b""
        self._field_bytes = 0
        self._file_bytes = 0
        self._pending = bytearray()  # file bytes not yet written
        self._target: bytearray | None = None  # where the current part's bytes go; None: discarded

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._part.headers.append((self._field.lower(), self._value))
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        headers = dict(self._part.headers)
        raw = headers.get(b"content-disposition", b"")
        disposition, options = parse_options_header(raw)
        if disposition != b"form-data" or b"name" not in options:
            raise MalformedRequestError(_NO_NAME)
        self._part.name = options[b"name"].decode("utf-8", "replace")
        self._part.filename = _client_filename(raw, options.get(b"filename"))
        is_file = self._part.filename is not None or self._part.name == self._file_field
        if is_file:
            content_type = headers.get(b"content-type")
            self._part.content_type = content_type.decode("latin-1") if content_type else None
        if is_file and self._part.name == self._file_field and self.form.file is None:
            self._target = self._pending
        elif is_file:
            self._target = None  # other files are read past, never kept
        else:
            if sum(len(v) for v in self.form.fields.values()) >= _MAX_FIELDS:
                raise MalformedRequestError(_TOO_MANY)
            self._target = self._part.data

    def _data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        if self._target is self._pending:
            self._file_bytes += size
            if self._file_bytes > self._limit:
                raise PayloadTooLargeError(self._limit)
        elif self._target is not None:
            self._field_bytes += size
            if self._field_bytes > FIELD_BYTES:
                raise FieldTooLongError(self._part.name, FIELD_BYTES)
        if self._target is not None:
            self._target += data[start:end]

    def _end(self) -> None:
        part = self._part
        if self._target is self._pending:
            self.form.file = Upload(self._path, part.filename or "", part.content_type, self._file_bytes)
        elif self._target is not None:
            if b"\x00" in part.data:  # no field means a NUL, and databases refuse it in text
                reason = f"the field {part.name!r} holds a NUL character"
                raise MalformedRequestError(reason)
            self.form.fields.setdefault(part.name, []).append(part.data.decode("utf-8", "replace"))
        self._target = None

    def take_pending(self) -> bytes:
        """File bytes received since the last call (the caller writes them)."""
        data = bytes(self._pending)
        self._pending.clear()
        return data

    @property
    def pending(self) -> int:
        return len(self._pending)


def _client_filename(disposition: bytes, plain: bytes | None) -> str | None:
    """The part's file name: RFC 5987 `filename*` if given, else `filename` (as python-multipart read it).

    Control characters (NUL, newlines) are dropped: a name is only echoed back and stored, and
    databases refuse NUL in text.
    """
    name = _named(disposition, plain)
    return None if name is None else "".join(c for c in name if c.isprintable() or c == " ")


def _named(disposition: bytes, plain: bytes | None) -> str | None:
    message = Message()
    message["content-disposition"] = disposition.decode("utf-8", "replace")
    params: list[tuple[str, Any]] = message.get_params([], header="content-disposition")  # RFC 2231: tuples
    for key, value in params:
        if key == "filename" and isinstance(value, tuple):
            with suppress(LookupError, UnicodeError):
                return collapse_rfc2231_value(value)
    if plain is None:
        return None
    name = plain.decode("utf-8", "replace")
    if name.startswith("=?") and name.endswith("?="):  # RFC 2047, as .NET writes names that are not ASCII
        with suppress(ValueError, LookupError, UnicodeError):
            return str(make_header(decode_header(name)))
    return name


def _boundary(request: Request) -> bytes | None:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        return None
    boundary = options.get(b"boundary")
    if not boundary:
        raise MalformedRequestError(_NO_BOUNDARY)
    return boundary


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise MalformedRequestError(_BAD_LENGTH) from None


@asynccontextmanager
async def receive_form(
    request: Request,
    *,
    limit: int,
    directory: Path | None = None,
    file_field: str = "file",
    idle_seconds: float = 60.0,
) -> AsyncIterator[Form]:
    """Read `request`'s multipart body: the `file_field` part to a temporary file, removed on exit.

    A body that is not multipart gives an empty `Form` (and is not read), so the caller reports the
    missing file as it would for a form without one.

    Raises:
        PayloadTooLargeError: the body declares, or the file turns out, larger than `limit` bytes.
        MalformedRequestError: the multipart body cannot be parsed.
        UploadTimeoutError: nothing arrived for `idle_seconds`.
    """
    declared = _declared_length(request)
    if declared is not None and declared > limit + FIELD_BYTES + 64 * 1024:  # room for the form's own bytes
        raise PayloadTooLargeError(limit)
    boundary = _boundary(request)
    if boundary is None:
        yield Form()
        return
    descriptor, path = await anyio.to_thread.run_sync(_create, directory)
    try:
        with os.fdopen(descriptor, "wb") as out:
            receiver = _Receiver(path, limit, file_field)
            parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
            try:
                async for chunk in _arriving(request, idle_seconds):
                    parser.write(chunk)
                    if receiver.pending >= _FLUSH_BYTES:
                        await anyio.to_thread.run_sync(out.write, receiver.take_pending())
                parser.finalize()
            except MultipartParseError as exc:
                raise MalformedRequestError(_NOT_MULTIPART) from exc
            await anyio.to_thread.run_sync(out.write, receiver.take_pending())
        yield receiver.form
    finally:
        with anyio.CancelScope(shield=True):  # removed even when the request is cancelled
            await anyio.to_thread.run_sync(_remove, path)


async def _arriving(request: Request, idle_seconds: float) -> AsyncIterator[bytes]:
    """The body's chunks as they come; UploadTimeoutError when none comes for `idle_seconds`."""
    stream = request.stream()
    while True:
        with anyio.move_on_after(idle_seconds) as waited:
            chunk = await anext(stream, None)
        if waited.cancelled_caught:
            raise UploadTimeoutError(idle_seconds)
        if chunk is None:
            return
        yield chunk


def _create(directory: Path | None) -> tuple[int, Path]:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix="aviary-upload-", dir=directory)
    return descriptor, Path(name)


def _remove(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()


async def client_gone(request: Request) -> None:
    """Return once the client has disconnected (call after the body was read: the server then sends nothing else).

    Servers answer a read past the body only with `http.disconnect`, when the connection closes or
    the response has been sent; a request answered normally never sees this return.
    """
    while (await request.receive())["type"] != "http.disconnect":
        pass
