#!/usr/bin/python3
"""An RTSP camera for vigil's tests: GStreamer's RTSP server (Debian's gir1.2-gst-rtsp-server-1.0,
run by Debian's python3 with python3-gi), on 127.0.0.1, streaming a photo as video the way an
IP camera streams its sensor: H.264 High profile from x264 at 10 frames a second, over RTP.

    rtsp_server.py PHOTO.png PORT AUTH

PORT 0 takes a free port; the port is printed ("listening PORT") once the server is up.
AUTH "digest" or "basic": how user "vigil" with password "s3cret" is asked for.
Paths:
  /stream  H.264 (High profile, CABAC, 8x8 transforms: what most cameras send)
  /jpeg    the same photo as RTP/JPEG, a codec vigil does not decode
Any other path is RTSP 404.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

Gst.init(None)
photo, port, auth_method = sys.argv[1], sys.argv[2], sys.argv[3]

# A near-lossless quantizer, so the pictures vigil decodes are the photo, and the labels
# it finds are the labels a replay of the photo gives.
source = (f"multifilesrc location={photo} loop=true caps=image/png,framerate=10/1 ! pngdec ! "
          "videoconvert ! video/x-raw,format=I420")
launches = {
    "/stream": f"( {source} ! x264enc tune=zerolatency pass=quant quantizer=12 key-int-max=10 "
               "! video/x-h264,profile=high ! rtph264pay name=pay0 pt=96 config-interval=1 )",
    "/jpeg": f"( {source} ! jpegenc ! rtpjpegpay name=pay0 pt=26 )",
}

server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
token = GstRtspServer.RTSPToken()
token.set_string("media.factory.role", "user")
auth = GstRtspServer.RTSPAuth()
if auth_method == "digest":
    auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    auth.add_digest("vigil", "s3cret", token)
else:
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic("vigil", "s3cret"), token)
server.set_auth(auth)
for path, launch in launches.items():
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    # One encoder however many clients watch, as a camera has.
    factory.set_shared(True)
    factory.add_role_from_structure(Gst.Structure.new_from_string(
        "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))
    server.get_mount_points().add_factory(path, factory)
if server.attach(None) == 0:
    sys.exit(f"rtsp_server: cannot listen on 127.0.0.1:{port}")
print("listening", server.get_bound_port(), flush=True)
GLib.MainLoop().run()
