"""Checks the relay's signaling JSON against Google's protobuf library (Debian python3-protobuf),
the reference proto3 JSON implementation.

    python3 proto3_json.py GENERATED_DIR < relay_frames

GENERATED_DIR holds signal_pb2.py (protoc --python_out). stdin: the relay's encoding of SAMPLES,
one frame per line, in order. Each is parsed strictly (unknown fields refused) and must equal
the sample. Then prints each sample as Google's library writes it, first with lowerCamelCase
names (its default), then with the .proto's names, one frame per line, for the relay to parse.
"""
import sys

sys.path.insert(0, sys.argv[1])

from google.protobuf import json_format  # noqa: E402

import signal_pb2 as pb  # noqa: E402

BIG = 2**64 - 2

SAMPLES = [
    pb.ClientMessage(join=pb.Join(grant="eyJ.g", sdp="v=0\r\n")),
    pb.ClientMessage(ping=pb.Ping(nonce=BIG)),
    pb.ClientMessage(mute=pb.MuteState(audio_muted=True)),
    pb.ClientMessage(video_preference=pb.VideoPreference(participant_id="p-1", max_height=360)),
    pb.ClientMessage(leave=pb.Leave()),
    pb.ServerMessage(pong=pb.Pong(nonce=BIG)),
    pb.ServerMessage(
        joined=pb.Joined(
            participant_id="p-1",
            participants=[pb.Participant(participant_id="p-2", user_id="u-2", name="Ann", video_muted=True, clear_media=True)],
            link_kind="video",
            sdp="v=0\r\n",
            resume_token="3q2-7w",
        )
    ),
    pb.ClientMessage(resume=pb.Resume(resume_token="3q2-7w")),
    pb.ServerMessage(resumed=pb.Resumed(participant_id="p-1")),
    pb.ServerMessage(participant_left=pb.ParticipantLeft(participant_id="p-2")),
]


def main():
    frames = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if len(frames) != len(SAMPLES):
        sys.exit(f"expected {len(SAMPLES)} frames from the relay, got {len(frames)}")
    for sample, frame in zip(SAMPLES, frames):
        parsed = type(sample)()
        try:
            json_format.Parse(frame, parsed)
        except json_format.ParseError as e:
            sys.exit(f"Google's parser refused the relay's {frame!r}: {e}")
        if parsed != sample:
            sys.exit(f"the relay's {frame!r} parsed to {parsed} instead of {sample}")
    for preserve in (False, True):
        for sample in SAMPLES:
            print(json_format.MessageToJson(sample, indent=None, preserving_proto_field_name=preserve))


main()
