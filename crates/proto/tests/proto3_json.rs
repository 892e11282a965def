//! The signaling JSON is proto3 JSON: what Google's protobuf library (the reference
//! implementation, Debian's `python3-protobuf`, with `protoc` from `protobuf-compiler`) writes,
//! in either spelling of the field names, the relay reads; what the relay writes, Google's
//! strict parser reads back to the same message. `scripts/test` installs both packages.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use callrelay_proto::signal::*;
use callrelay_proto::{client_message::Msg as C, server_message::Msg as S};
use callrelay_proto::{ClientMessage, ServerMessage};

const BIG: u64 = u64::MAX - 1;

enum Sample {
    Client(ClientMessage),
    Server(ServerMessage),
}

/// The same messages, in the same order, as `SAMPLES` in proto3_json.py.
fn samples() -> Vec<Sample> {
    vec![
        Sample::Client(
            C::Join(Join {
                grant: "eyJ.g".into(),
                sdp: "v=0\r\n".into(),
            })
            .into(),
        ),
        Sample::Client(C::Ping(Ping { nonce: BIG }).into()),
        Sample::Client(
            C::Mute(MuteState {
                audio_muted: true,
                video_muted: false,
            })
            .into(),
        ),
        Sample::Client(
            C::VideoPreference(VideoPreference {
                participant_id: "p-1".into(),
                max_height: 360,
            })
            .into(),
        ),
        Sample::Client(C::Leave(Leave {}).into()),
        Sample::Server(S::Pong(Pong { nonce: BIG }).into()),
        Sample::Server(
            S::Joined(Joined {
                participant_id: "p-1".into(),
                participants: vec![Participant {
                    participant_id: "p-2".into(),
                    user_id: "u-2".into(),
                    name: "Ann".into(),
                    audio_muted: false,
                    video_muted: true,
                    clear_media: true,
                }],
                link_kind: "video".into(),
                sdp: "v=0\r\n".into(),
                resume_token: "3q2-7w".into(),
            })
            .into(),
        ),
        Sample::Client(
            C::Resume(Resume {
                resume_token: "3q2-7w".into(),
            })
            .into(),
        ),
        Sample::Server(
            S::Resumed(Resumed {
                participant_id: "p-1".into(),
            })
            .into(),
        ),
        Sample::Server(
            S::ParticipantLeft(ParticipantLeft {
                participant_id: "p-2".into(),
                ..Default::default()
            })
            .into(),
        ),
    ]
}

#[test]
fn googles_protobuf_library_and_the_relay_read_each_others_json() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let generated = tempfile_dir();
    let protoc = Command::new("protoc")
        .arg(format!("--python_out={}", generated.display()))
        .arg("-I")
        .arg(root.join("proto"))
        .arg(root.join("proto/signal.proto"))
        .status()
        .expect("protoc runs (Debian: protobuf-compiler; scripts/test installs it)");
    assert!(protoc.success(), "protoc failed");

    let samples = samples();
    let ours: String = samples
        .iter()
        .map(|s| match s {
            Sample::Client(m) => m.to_json() + "\n",
            Sample::Server(m) => m.to_json() + "\n",
        })
        .collect();
    assert!(
        ours.contains(&format!(r#""nonce":"{BIG}""#)),
        "64-bit integers are strings: {ours}"
    );
    // Debian's interpreter, where python3-protobuf is installed (not a pyenv shim's).
    let mut python = Command::new("/usr/bin/python3")
        .arg(root.join("crates/proto/tests/proto3_json.py"))
        .arg(&generated)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 runs (Debian: python3-protobuf; scripts/test installs it)");
    python
        .stdin
        .take()
        .unwrap()
        .write_all(ours.as_bytes())
        .unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Google's library refused the relay's JSON: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(theirs.len(), 2 * samples.len(), "{theirs:?}");
    // lowerCamelCase first (Google's default), then the .proto's names.
    assert!(theirs[3].contains("\"participantId\""), "{}", theirs[3]);
    assert!(
        theirs[samples.len() + 3].contains("\"participant_id\""),
        "{}",
        theirs[samples.len() + 3]
    );
    for (i, frame) in theirs.iter().enumerate() {
        match &samples[i % samples.len()] {
            Sample::Client(want) => {
                let got = ClientMessage::from_json(frame)
                    .unwrap_or_else(|e| panic!("the relay refused Google's {frame}: {e}"));
                assert_eq!(&got, want, "{frame}");
            }
            Sample::Server(want) => {
                let got = ServerMessage::from_json(frame)
                    .unwrap_or_else(|e| panic!("the relay refused Google's {frame}: {e}"));
                assert_eq!(&got, want, "{frame}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&generated);
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "callrelay-proto3-json-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
