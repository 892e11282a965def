//! Compiles `proto/signal.proto` with protox (a pure-Rust protobuf compiler: no `protoc` binary
//! needed on the build machine) into prost types that also derive serde for the proto3 JSON form
//! used on the WebSocket.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let file = format!("{proto_dir}/signal.proto");
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([&file], [proto_dir])?;
    let mut config = prost_build::Config::new();
    config
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        // Messages: snake_case keys as in the .proto; absent fields take their defaults.
        .message_attribute(".", "#[serde(default, deny_unknown_fields)]")
        // A oneof enum serialises externally tagged, {"field_name": {...}}: the proto3 JSON form
        // of the message holding it (see `to_json` in lib.rs).
        .enum_attribute(
            ".callrelay.signal.v1.ClientMessage.msg",
            "#[serde(rename_all = \"snake_case\")]",
        )
        .enum_attribute(
            ".callrelay.signal.v1.ServerMessage.msg",
            "#[serde(rename_all = \"snake_case\")]",
        );
    config.compile_fds(fds)?;
    Ok(())
}
