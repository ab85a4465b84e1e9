"""`aviary transcribe` and `aviary models` as users run them: the installed console script, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest
import srt

from tests.support.fixtures import AUDIO, MODELS, golden
from tests.support.hub import add_onnx_model
from tests.support.longaudio import encode_mp3, long_recording
from tests.support.media import ENCODINGS, Encoding, encode
from tools.fixtures import speech

AVIARY = str(Path(sys.executable).with_name("aviary"))
WAV = Encoding("wav", "wav", "pcm_s16le", rate=16_000)


def aviary(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "AVIARY_THREADS": "1", "AVIARY_DEVICE": "cpu", **(env or {})}
    return subprocess.run([AVIARY, *args], capture_output=True, text=True, timeout=300, env=environment, check=False)


def test_prints_the_golden_text_of_a_parakeet_clip() -> None:
    case = next(c for c in golden("parakeet-tdt-tiny")["cases"] if c["clip"] == "en-digits-6.wav")
    done = aviary("transcribe", str(AUDIO / "en-digits-6.wav"), "--model", str(MODELS / "parakeet-tdt-tiny"))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == case["text"] + "\n"


def test_a_terminal_sees_how_many_seconds_of_each_file_are_done(tmp_path: Path) -> None:
    import fcntl
    import math
    import pty
    import struct
    import termios

    recording = long_recording(75, seed=4)
    path = tmp_path / "seventy-five.mp3"
    path.write_bytes(encode_mp3(recording))
    terminal, stderr = pty.openpty()
    fcntl.ioctl(stderr, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a width to draw in
    environment = {**os.environ, "AVIARY_THREADS": "1", "AVIARY_DEVICE": "cpu"}
    command = [AVIARY, "transcribe", str(path), "--model", str(MODELS / "parakeet-digits")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=environment) as process:
        os.close(stderr)
        shown = b""
        while chunk := _read(terminal):
            shown += chunk
        stdout = process.stdout.read() if process.stdout else b""
    os.close(terminal)
    assert process.returncode == 0, shown
    assert jiwer.wer(recording.text, stdout.decode().strip()) < 0.1
    bar = shown.decode()
    assert "seventy-five.mp3:   0%|" in bar
    assert f"| 0/{math.ceil(recording.seconds)} [" in bar  # the length the MP3 declares
    assert "s/s]" in bar


def _read(terminal: int) -> bytes:
    try:
        return os.read(terminal, 4096)
    except OSError:  # the other side closed
        return b""


@pytest.mark.fixtures
def test_stdout_carries_only_transcripts_while_nemo_logs() -> None:
    model = MODELS / "parakeet-digits" / "model.nemo"
    done = aviary("transcribe", str(AUDIO / "en-digits-3.wav"), "--model", str(model), "--format", "json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["text"] == "three one four"
    assert body["usage"] == {"type": "duration", "seconds": pytest.approx(1.338, abs=0.001)}
    assert "[NeMo I" in done.stderr  # NeMo's info log, which it writes to stdout, went to stderr


def test_canary_transcribes_and_translates_with_language_flags() -> None:
    cases = golden("canary-digits")["cases"]
    transcribe = next(c for c in cases if c["clip"] == "canary-fr-1.wav" and c["target_lang"] == "fr" and c["pnc"])
    done = aviary(
        "transcribe", str(AUDIO / "canary-fr-1.wav"), "--model", str(MODELS / "canary-digits"), "--language", "fr"
    )
    assert done.stdout == transcribe["text"] + "\n", done.stderr
    translate = next(c for c in cases if c["clip"] == "canary-es-2.wav" and c["target_lang"] == "en" and not c["pnc"])
    done = aviary(
        "transcribe",
        *(str(AUDIO / "canary-es-2.wav"), "--model", str(MODELS / "canary-digits"), "--language", "es"),
        *("--task", "translate", "--target-language", "en", "--no-pnc"),
    )
    assert done.stdout == translate["text"] + "\n", done.stderr


def test_digits_model_understands_fresh_speech_in_subtitles(tmp_path: Path) -> None:
    rng = np.random.default_rng(2024)
    specs = [speech.random_spec(rng, "en", heldout=True) for _ in range(6)]
    paths = []
    for index, spec in enumerate(specs):
        paths.append(tmp_path / f"fresh-{index}.wav")
        speech.write_wav(paths[-1], speech.synthesize(spec))
    out = tmp_path / "out"
    done = aviary(
        "transcribe",
        *map(str, paths),
        "--model",
        str(MODELS / "parakeet-digits"),
        "--format",
        "srt",
        "--output-dir",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    references, hypotheses = [], []
    for path, spec in zip(paths, specs, strict=True):
        cues = list(srt.parse((out / f"{path.stem}.srt").read_text(encoding="utf-8")))
        hypotheses.append(" ".join(c.content for c in cues))
        references.append(" ".join(speech.DIGIT_WORDS["en"][d] for d in spec.digits))
        assert cues[0].start.total_seconds() >= 0
        assert cues[-1].end.total_seconds() <= len(speech.synthesize(spec)) / speech.SAMPLE_RATE + 0.08
    # parakeet-digits has 2.2% WER on held-out voices: a transcript that means nothing would be ~100%.
    assert jiwer.wer(references, hypotheses) < 0.1


def test_a_dash_reads_audio_from_standard_input(tmp_path: Path) -> None:
    def piped(stdin: bytes, *extra: str) -> subprocess.CompletedProcess[bytes]:
        environment = {**os.environ, "AVIARY_THREADS": "1", "AVIARY_DEVICE": "cpu"}
        command = [AVIARY, "transcribe", "-", "--model", str(MODELS / "parakeet-digits"), *extra]
        return subprocess.run(command, input=stdin, capture_output=True, timeout=300, env=environment, check=False)

    recording = long_recording(40, seed=6)
    done = piped(encode_mp3(recording))
    assert done.returncode == 0, done.stderr
    assert jiwer.wer(recording.text, done.stdout.decode().strip()) < 0.1
    out = tmp_path / "out"
    done = piped((AUDIO / "en-digits-3.wav").read_bytes(), "--output-dir", str(out), "--format", "vtt")
    assert done.returncode == 0, done.stderr
    assert "three one four" in (out / "stdin.vtt").read_text(encoding="utf-8")
    empty = piped(b"")
    assert (empty.returncode, empty.stderr.decode()) == (1, "aviary: -: [empty_file] The file is empty.\n")


def test_inputs_of_the_same_name_never_overwrite_each_others_output(tmp_path: Path) -> None:
    clips = {"en-digits-3.wav": "a/talk.wav", "en-digits-6.wav": "b/talk.wav", "en-digits-10.wav": "talk.flac"}
    for clip_name, name in clips.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes((AUDIO / clip_name).read_bytes())  # the content decides, not the suffix
    out = tmp_path / "out"
    inputs = [str(tmp_path / name) for name in clips.values()]
    done = aviary("transcribe", *inputs, "--model", str(MODELS / "parakeet-digits"), "--output-dir", str(out))
    assert done.returncode == 0, done.stderr
    text = {c["clip"]: c["text"] for c in golden("parakeet-digits")["cases"]}
    written = {p.name: p.read_text(encoding="utf-8") for p in out.iterdir()}
    assert written == {
        "talk.wav.txt": text["en-digits-3.wav"] + "\n",
        "talk-2.wav.txt": text["en-digits-6.wav"] + "\n",
        "talk.flac.txt": text["en-digits-10.wav"] + "\n",
    }
    alone = aviary("transcribe", inputs[2], "--model", str(MODELS / "parakeet-digits"), "--output-dir", str(out))
    assert alone.returncode == 0
    assert (out / "talk.txt").read_text(encoding="utf-8") == text["en-digits-10.wav"] + "\n"  # no clash: the stem


def test_bad_files_get_one_line_each_and_the_rest_is_still_transcribed(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.touch()
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n" * 20, encoding="utf-8")
    good = AUDIO / "en-digits-3.wav"
    missing = tmp_path / "missing.wav"
    done = aviary(
        "transcribe", str(empty), str(text), str(good), str(missing), "--model", str(MODELS / "parakeet-digits")
    )
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines == [
        f"aviary: {empty}: [empty_file] The file is empty.",
        f"aviary: {text}: [unsupported_media] The file is not a supported audio or video format.",
        f"aviary: {missing}: [unreadable_file] No such file or directory",
    ]
    assert done.stdout == f"==> {good} <==\nthree one four\n"


def test_json_formats_and_a_refused_task() -> None:
    done = aviary(
        "transcribe",
        str(AUDIO / "en-digits-3.wav"),
        "--model",
        str(MODELS / "parakeet-digits"),
        "--format",
        "verbose_json",
    )
    body = json.loads(done.stdout)
    assert [w["word"] for w in body["words"]] == ["three", "one", "four"]
    assert body["task"] == "transcribe"
    assert body["segments"][0]["text"] == "three one four"
    done = aviary(
        "transcribe", str(AUDIO / "en-digits-3.wav"), "--model", str(MODELS / "parakeet-digits"), "--task", "translate"
    )
    assert done.returncode == 1
    assert done.stderr.startswith("aviary: error: [unsupported_task]")
    for language in ("klingon", "../x"):  # a model that does not list its languages still takes codes only
        done = aviary(
            "transcribe",
            str(AUDIO / "en-digits-3.wav"),
            "--model",
            str(MODELS / "parakeet-digits"),
            "--language",
            language,
        )
        assert done.returncode == 1
        assert done.stderr.startswith(f"aviary: error: [unsupported_language] The model '{MODELS / 'parakeet-digits'}'")
        assert "supported: ISO 639 codes such as 'en'" in done.stderr


def test_models_list_and_an_offline_hub_cache(tmp_path: Path) -> None:
    hub = tmp_path / "hf" / "hub"
    add_onnx_model(hub, "istupakov/parakeet-tdt-0.6b-v2-onnx", MODELS / "parakeet-digits")
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    listing = aviary("models", "list", env=env)
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line.split()[1:3] for line in listing.stdout.splitlines()[1:] if len(line.split()) > 2}
    assert rows["parakeet-tdt-0.6b-v2"] == ["onnx", "yes"]
    assert rows["canary-1b-v2"] == ["onnx", "no"]
    done = aviary("transcribe", str(AUDIO / "en-digits-3.wav"), "--model", "parakeet", env=env)
    assert done.stdout == "three one four\n", done.stderr
    missing = aviary("transcribe", str(AUDIO / "en-digits-3.wav"), "--model", "canary", env=env)
    assert missing.returncode == 1
    assert missing.stderr.startswith("aviary: error: [model_unavailable] The model 'canary-1b-v2' is not available")
    pull = aviary("models", "pull", "parakeet", env=env)
    assert pull.returncode == 0
    assert pull.stdout.startswith("parakeet-tdt-0.6b-v2: ")
    unknown = aviary("models", "pull", "whisper-1", env=env)
    assert unknown.stderr.startswith("aviary: error: [model_not_found]")


def test_every_format_is_transcribed_and_hostile_files_are_refused(tmp_path: Path) -> None:
    spec = speech.random_spec(np.random.default_rng(31), "en", heldout=True)
    audio = speech.synthesize(spec)
    good = []
    for encoding in ENCODINGS:
        good.append(tmp_path / f"{encoding.name}.bin")  # no telling suffix: content decides
        good[-1].write_bytes(encode(audio, speech.SAMPLE_RATE, encoding))
    playlist = tmp_path / "list.m3u8"
    playlist.write_bytes(b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    noise = tmp_path / "noise.mp3"
    noise.write_bytes(np.random.default_rng(3).bytes(50_000))
    out = tmp_path / "out"
    done = aviary(
        "transcribe", *map(str, [*good, playlist, noise]), "--model", str(MODELS / "parakeet-digits"),
        "--output-dir", str(out),
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"aviary: {playlist}: [unsupported_media] The file is not a supported audio or video format.",
        f"aviary: {noise}: [unsupported_media] The file is not a supported audio or video format.",
    ]
    for path, encoding in zip(good, ENCODINGS, strict=True):
        text = (out / f"{path.stem}.txt").read_text(encoding="utf-8")
        assert text.endswith("\n"), path.name
        assert encoding.understood(text.removesuffix("\n"), spec.text), (path.name, text)


def test_an_output_dir_that_cannot_be_written_is_one_line_and_other_files_go_on(tmp_path: Path) -> None:
    model = ("--model", str(MODELS / "parakeet-digits"))
    clash = tmp_path / "a-file"
    clash.write_text("", encoding="utf-8")
    for out_dir in (clash, clash / "below"):
        done = aviary("transcribe", str(AUDIO / "en-digits-3.wav"), *model, "--output-dir", str(out_dir))
        assert done.returncode == 1
        assert done.stderr.startswith(f"aviary: error: [unwritable_output] Cannot write {out_dir}: "), done.stderr
        assert len(done.stderr.splitlines()) == 1
    out = tmp_path / "out"
    (out / "en-digits-3.txt").mkdir(parents=True)  # a directory where the first output would go
    clips = [str(AUDIO / "en-digits-3.wav"), str(AUDIO / "en-digits-6.wav"), str(AUDIO / "en-digits-6.wav")]
    done = aviary("transcribe", *clips, *model, "--output-dir", str(out))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"aviary: {clips[0]}: [unwritable_output] Cannot write {out / 'en-digits-3.txt'}: Is a directory."
    ]
    text = {c["clip"]: c["text"] + "\n" for c in golden("parakeet-digits")["cases"]}
    written = {p.name: p.read_text(encoding="utf-8") for p in out.iterdir() if p.is_file()}
    assert written == {"en-digits-6.wav.txt": text["en-digits-6.wav"], "en-digits-6-2.wav.txt": text["en-digits-6.wav"]}


def test_pipes_fifos_and_odd_names_are_read_and_named_as_given(tmp_path: Path) -> None:
    import threading

    clip = (AUDIO / "en-digits-3.wav").read_bytes()
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    read_end, write_end = os.pipe()

    def feed() -> None:
        with fifo.open("wb") as named:
            named.write(clip)
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(clip)

    odd = tmp_path / "odd\nname.wav"
    odd.write_bytes(clip)
    not_utf8 = os.fsencode(tmp_path) + b"/caf\xe9.wav"
    Path(os.fsdecode(not_utf8)).write_bytes(clip)
    feeder = threading.Thread(target=feed)
    feeder.start()
    command: list[str | bytes] = [AVIARY, "transcribe", str(fifo), f"/dev/fd/{read_end}", not_utf8]
    command += ["--model", str(MODELS / "parakeet-digits")]
    environment = {**os.environ, "AVIARY_THREADS": "1", "AVIARY_DEVICE": "cpu"}
    done = subprocess.run(command, capture_output=True, timeout=300, env=environment, pass_fds=(read_end,), check=False)
    os.close(read_end)
    feeder.join()
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout.split(b"\n")[1::2] == [b"three one four"] * 3
    assert done.stdout.split(b"\n")[4] == b"==> " + not_utf8 + b" <=="  # the name's own bytes
    missing = aviary("transcribe", str(odd) + "-missing", "--model", str(MODELS / "parakeet-digits"))
    assert missing.stderr == f"aviary: {tmp_path}/odd\\nname.wav-missing: [unreadable_file] No such file or directory\n"


def test_a_reader_that_goes_away_ends_the_run_quietly() -> None:
    clips = [str(AUDIO / "en-digits-3.wav")] * 3
    environment = {**os.environ, "AVIARY_THREADS": "1", "AVIARY_DEVICE": "cpu"}
    command = [AVIARY, "transcribe", *clips, "--model", str(MODELS / "parakeet-digits")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment) as process:
        assert process.stdout is not None
        process.stdout.close()  # as `| head -0` does
        _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    assert stderr == b""


def test_bad_settings_and_flags_are_one_line_before_anything_loads() -> None:
    clip = str(AUDIO / "en-digits-3.wav")
    for env, flags, expected in [
        ({"AVIARY_DEVICE": "gpu"}, (), "AVIARY_DEVICE or --device 'gpu': Input should be 'auto', 'cpu' or 'cuda'"),
        ({}, ("--threads", "-1"), "AVIARY_THREADS or --threads -1: Input should be greater than or equal to 0"),
        ({"AVIARY_ALIASES": "{nope"}, (), "AVIARY_ALIASES is not valid JSON (Expecting property name"),
    ]:
        done = aviary("transcribe", clip, *flags, env=env)
        assert done.returncode == 1
        assert done.stderr.startswith(f"aviary: error: [invalid_option] invalid settings: {expected}"), done.stderr
        assert len(done.stderr.splitlines()) == 1
    secret = aviary("models", "list", env={"AVIARY_DATABASE_URL": "postgresql://u:hunter2@h/db", "AVIARY_THREADS": "x"})
    assert "[invalid_option]" in secret.stderr
    assert "hunter2" not in secret.stderr
    done = aviary("transcribe", clip, "--target-language", "de")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith(
        "--target-language is the language of a translation: give it with --task translate"
    )


def test_registry_models_are_checked_before_they_are_fetched_and_pull_respects_offline(tmp_path: Path) -> None:
    import http.server
    import threading

    asked: list[str] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_error(503)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    env = {
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": f"http://127.0.0.1:{hub.server_port}",
        "HF_HUB_DISABLE_XET": "1",
    }
    clip = str(AUDIO / "en-digits-3.wav")
    try:
        language = aviary("transcribe", clip, "--model", "canary-180m-flash", "--language", "ja", env=env)
        assert language.stderr.startswith("aviary: error: [unsupported_language]"), language.stderr
        task = aviary("transcribe", clip, "--model", "parakeet", "--task", "translate", env=env)
        assert task.stderr.startswith("aviary: error: [unsupported_task]"), task.stderr
        assert asked == []
        offline = aviary("models", "pull", "canary-180m-flash", env={**env, "AVIARY_OFFLINE": "1"})
        assert offline.returncode == 1
        assert "is not in the Hugging Face cache and downloads are off" in offline.stderr
        assert asked == []
        online = aviary("models", "pull", "canary-180m-flash", env=env)
        assert online.returncode == 1
        assert online.stderr.startswith("aviary: error: [model_unavailable] The model 'canary-180m-flash'")
        assert "downloads are off" not in online.stderr
        assert "downloading istupakov/canary-180m-flash-onnx failed" in online.stderr
        assert asked  # it did try
    finally:
        hub.shutdown()
        hub.server_close()


def test_silence_has_the_language_the_model_writes_and_a_missing_quantization_is_said(tmp_path: Path) -> None:
    silence = tmp_path / "silence.wav"
    silence.write_bytes(encode(np.zeros(16_000 * 45, dtype=np.float32), 16_000, WAV))
    done = aviary(
        "transcribe",
        str(silence),
        "--model",
        str(MODELS / "canary-digits"),
        "--format",
        "verbose_json",
        "--quantization",
        "int8",
    )
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert (body["text"], body["language"], body["duration"]) == ("", "english", 45.0)
    assert "has no *.int8.onnx files: running its full-precision graphs" in done.stderr


def test_chunks_longer_than_the_model_takes_are_cut_to_its_position_table(tmp_path: Path) -> None:
    # parakeet-digits was exported with 1024 positions (81.84 s): a 130 s input in one piece fails there.
    recording = long_recording(130, seed=9, unbroken=((20.0, 100.0),))  # no pause to cut at for 100 s
    path = tmp_path / "long.wav"
    speech.write_wav(path, recording.audio)
    args = ("transcribe", str(path), "--model", str(MODELS / "parakeet-digits"), "--format", "verbose_json")
    asked = aviary(*args, env={"AVIARY_CHUNK_SECONDS": "150"})
    at_the_limit = aviary(*args, env={"AVIARY_CHUNK_SECONDS": "81.84"})
    assert asked.returncode == 0, asked.stderr
    assert "takes at most 81.8 s of audio in one piece: its chunks are that long, not 150 s" in asked.stderr
    assert asked.stdout == at_the_limit.stdout
    assert jiwer.wer(recording.text, json.loads(asked.stdout)["text"]) < 0.1
