//! Compiles `proto/signal.proto` with protox (a pure-Rust protobuf compiler: no `protoc` binary
//! needed on the build machine) into prost types that also derive serde for the proto3 JSON form
//! used on the WebSocket.
//!
//! proto3 JSON (https://protobuf.dev/programming-guides/json/), as the relay speaks it:
//! - keys are emitted with the .proto's field names (snake_case, what the JSON printers'
//!   "preserve proto field names" option gives) and accepted in both spellings, the field name
//!   and its lowerCamelCase JSON name (`participant_id` and `participantId`);
//! - 64-bit integers are emitted as JSON strings and accepted as strings or numbers;
//! - unknown keys are refused (the JSON parsers' default), so a typo is an error, not a no-op.

/// `FieldDescriptorProto.type` values of the 64-bit integer types.
const TYPES_64_BIT: [i32; 5] = [
    3,  // TYPE_INT64
    4,  // TYPE_UINT64
    6,  // TYPE_FIXED64
    16, // TYPE_SFIXED64
    18, // TYPE_SINT64
];
/// `FieldDescriptorProto.label` of repeated fields.
const LABEL_REPEATED: i32 = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let file = format!("{proto_dir}/signal.proto");
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([&file], [proto_dir])?;
    let mut config = prost_build::Config::new();
    config
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        // Messages: absent fields take their defaults; unknown keys are refused.
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
    for f in &fds.file {
        let package = f.package.as_deref().unwrap_or_default();
        for m in &f.message_type {
            if !m.nested_type.is_empty() {
                return Err(format!(
                    "{}: nested messages need their JSON names here too",
                    m.name()
                )
                .into());
            }
            let path = format!(".{package}.{}", m.name());
            for field in &m.field {
                let name = field.name();
                // Oneof members are variants of the oneof's enum, at `<message>.<oneof>.<field>`.
                let at = match field.oneof_index {
                    Some(i) => {
                        let oneof = m.oneof_decl[i as usize].name();
                        format!("{path}.{oneof}.{name}")
                    }
                    None => format!("{path}.{name}"),
                };
                let json = lower_camel(name);
                if json != name {
                    config.field_attribute(&at, format!("#[serde(alias = \"{json}\")]"));
                }
                if TYPES_64_BIT.contains(&field.r#type.unwrap_or_default()) {
                    if field.label == Some(LABEL_REPEATED) || field.oneof_index.is_some() {
                        return Err(format!(
                            "{at}: a repeated or oneof 64-bit integer needs its own JSON form"
                        )
                        .into());
                    }
                    config.field_attribute(&at, "#[serde(with = \"crate::json_int64\")]");
                }
            }
        }
    }
    config.compile_fds(fds)?;
    Ok(())
}

/// The proto3 JSON name of a field: underscores dropped, the letter after each one upper-cased
/// (what protoc computes as `json_name`).
fn lower_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}
