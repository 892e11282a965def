//! STUN messages signed with a participant's real ICE password, so that the fuzzer's bytes get
//! past the integrity check (which it could never forge) into what comes after it.

use aws_lc_rs::hmac;

const MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// HMAC-SHA1 of the concatenated `parts` (the function str0m's STUN code takes).
pub(crate) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// CRC-32 (ISO-HDLC, the one STUN's FINGERPRINT uses).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn push_attr(out: &mut Vec<u8>, typ: u16, value: &[u8]) {
    out.extend_from_slice(&typ.to_be_bytes());
    // Values longer than a datagram are cut by the caller; the length field is 16 bits.
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A STUN message of type `typ`: USERNAME `username`, then `attrs` as given (raw TLVs, zero
/// padded to a multiple of 4), then MESSAGE-INTEGRITY keyed with `password` and, if
/// `fingerprint`, FINGERPRINT — both computed as RFC 8489 says.
pub(crate) fn signed(
    typ: u16,
    trans_id: [u8; 12],
    username: &[u8],
    attrs: &[u8],
    password: &[u8],
    fingerprint: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + username.len() + attrs.len());
    out.extend_from_slice(&(typ & 0x3fff).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&trans_id);
    push_attr(
        &mut out,
        ATTR_USERNAME,
        &username[..username.len().min(512)],
    );
    out.extend_from_slice(&attrs[..attrs.len().min(1024)]);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    // MESSAGE-INTEGRITY covers the header with a length that includes itself.
    let len_with_mi = (out.len() - 20 + 24) as u16;
    out[2..4].copy_from_slice(&len_with_mi.to_be_bytes());
    let mac = hmac_sha1(password, &[&out]);
    push_attr(&mut out, ATTR_MESSAGE_INTEGRITY, &mac);
    if fingerprint {
        let len_with_fp = (out.len() - 20 + 8) as u16;
        out[2..4].copy_from_slice(&len_with_fp.to_be_bytes());
        let fp = crc32(&out) ^ FINGERPRINT_XOR;
        push_attr(&mut out, ATTR_FINGERPRINT, &fp.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::ice::StunMessage;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn str0m_parses_and_verifies_what_we_sign() {
        // PRIORITY and USE-CANDIDATE.
        let attrs = [0x00, 0x24, 0, 4, 0x6e, 0, 0x1e, 0xff, 0x00, 0x25, 0, 0];
        let m = signed(0x0001, [9; 12], b"relay:client", &attrs, b"secretpw", true);
        let parsed = StunMessage::parse(&m).expect("parses");
        assert!(parsed.is_binding_request());
        assert_eq!(parsed.split_username(), Some(("relay", "client")));
        assert!(parsed.use_candidate());
        assert!(parsed.verify(b"secretpw", hmac_sha1));
        assert!(!parsed.verify(b"otherpw", hmac_sha1));
    }
}
