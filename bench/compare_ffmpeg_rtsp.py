#!/usr/bin/python3
"""CPU per decoded picture of vigil's RTSP source against ffmpeg, on the same stream, in one run.

    bench/compare_ffmpeg_rtsp.py VIGIL [--seconds 20] [--fps 15] [--sizes 1280x720,1920x1080]

For each size, a clip is made once (not timed): a bundled photo scaled to the size with sensor-like
noise over it (so every picture differs, as a real camera's do), encoded by x264 as H.264 High
profile at a camera's bit rate (2 Mbit/s at 720p, 4 at 1080p) with a key frame every 2 s. GStreamer's
RTSP server (tests/common/rtsp_server.py's packages) then streams it in real time, and three clients
watch the same stream at once:

  - `VIGIL bench-source URL`            vigil's RTSP source, every picture converted to RGB
  - `VIGIL bench-source URL --fps 5`    as a camera with fps = 5 runs it: every picture decoded,
                                        5 a second converted
  - `ffmpeg -threads 1 -i URL -f null -`  ffmpeg's H.264 decoder, one thread, no conversion

Each client's CPU (user + system, from the kernel's accounting of the child process) over the
pictures it decoded. Prints a table and the ratios vigil ÷ ffmpeg. Needs Debian's ffmpeg,
python3-gi, gir1.2-gst-rtsp-server-1.0 and GStreamer's base, good and ugly plugins
(scripts/setup-system.sh test, then `apt-get install ffmpeg`).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BITRATE = {720: 2000, 1080: 4000}

SERVER = r"""
import sys, gi
gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer
Gst.init(None)
server = GstRtspServer.RTSPServer(); server.set_address("127.0.0.1"); server.set_service("0")
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(f"( filesrc location={sys.argv[1]} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/clip", factory)
server.attach(None)
print("listening", server.get_bound_port(), flush=True)
GLib.MainLoop().run()
"""


def make_clip(path, width, height, fps, seconds):
    photo = os.path.join(ROOT, "tests/photos/group.png")
    frames = int(fps * seconds)
    bitrate = BITRATE.get(height, 4000)
    pipeline = (
        f"compositor name=mix sink_1::alpha=0.12 ! videoconvert ! video/x-raw,format=I420 ! "
        f"x264enc speed-preset=veryfast tune=zerolatency bitrate={bitrate} key-int-max={2 * fps} ! "
        f"video/x-h264,profile=high ! mp4mux ! filesink location={path} "
        f"multifilesrc location={photo} loop=true num-buffers={frames} caps=image/png,framerate={fps}/1 ! "
        f"pngdec ! videoconvert ! videoscale ! video/x-raw,width={width},height={height} ! mix.sink_0 "
        f"videotestsrc pattern=snow num-buffers={frames} ! video/x-raw,width={width},height={height},framerate={fps}/1 ! mix.sink_1"
    )
    subprocess.run(["gst-launch-1.0", "-q", *pipeline.split()], check=True)


def cpu_of(process):
    """Waits for a child and returns (exit status, CPU seconds it used)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("vigil")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=int, default=15, help="the stream's frame rate")
    parser.add_argument("--sizes", default="1280x720,1920x1080")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.split("x"))
            clip = os.path.join(scratch, f"clip-{size}.mp4")
            print(f"encoding a {size} clip ...", file=sys.stderr)
            make_clip(clip, width, height, args.fps, args.seconds + 15)
            server = subprocess.Popen([sys.executable, "-c", SERVER, clip], stdout=subprocess.PIPE, text=True)
            try:
                port = int(server.stdout.readline().split()[1])
                url = f"rtsp://127.0.0.1:{port}/clip"
                vigil_all = subprocess.Popen([args.vigil, "bench-source", url, "--seconds", str(args.seconds)],
                                             stdout=subprocess.PIPE, text=True)
                vigil_5 = subprocess.Popen([args.vigil, "bench-source", url, "--seconds", str(args.seconds), "--fps", "5"],
                                           stdout=subprocess.PIPE, text=True)
                # ffmpeg starts at once too, and runs the same time plus the connection's set-up.
                ffmpeg = subprocess.Popen(["ffmpeg", "-nostdin", "-hide_banner", "-threads", "1", "-rtsp_transport", "tcp",
                                           "-i", url, "-t", str(args.seconds + 1), "-f", "null", "-"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                reports = []
                for process in (vigil_all, vigil_5):
                    out = process.stdout.read()
                    status, _ = cpu_of(process)
                    if status != 0:
                        sys.exit(f"vigil bench-source failed ({status}): {out}")
                    reports.append(json.loads(out))
                log = ffmpeg.stderr.read()
                status, ffmpeg_cpu = cpu_of(ffmpeg)
                frames = [int(n) for n in re.findall(r"frame=\s*(\d+)", log)]
                if status != 0 or not frames:
                    sys.exit(f"ffmpeg failed ({status}):\n{log[-2000:]}")
            finally:
                server.kill()
                server.wait()
            ffmpeg_ms = ffmpeg_cpu * 1e3 / frames[-1]
            for name, report in (("vigil, every picture to RGB", reports[0]), ("vigil, fps = 5", reports[1])):
                rows.append((size, name, report["decoded"], report["cpu_ms_per_decoded"], ffmpeg_ms))
            rows.append((size, "ffmpeg -threads 1", frames[-1], ffmpeg_ms, ffmpeg_ms))
    print(f"| stream | client | pictures decoded | CPU ms per picture | ÷ ffmpeg |")
    print("| --- | --- | --- | --- | --- |")
    for size, name, decoded, ms, reference in rows:
        print(f"| {size} H.264 High, {args.fps} fps | {name} | {decoded} | {ms:.2f} | {ms / reference:.2f} |")


if __name__ == "__main__":
    main()
