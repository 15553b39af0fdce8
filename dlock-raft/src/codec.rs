//! How log records and snapshots are laid out on disk: the only module that calls bincode.
//!
//! A record is `[u32 length][u32 crc32 of the body][body]`, big-endian, the body a bincode
//! encoding. A record whose length runs past the end of the file or whose checksum does not
//! match is what a crash in the middle of a write leaves at a log's tail.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::RaftStoreError;

/// Bytes in front of each record's body: its length and its checksum.
pub const RECORD_HEADER: usize = 8;

/// The largest record body accepted when reading (a bound against a garbage length).
pub const MAX_RECORD: usize = 1 << 30;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Encodes a value as a bincode body.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RaftStoreError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| RaftStoreError::Codec(e.to_string()))
}

/// Decodes a whole bincode body (trailing bytes are an error).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, RaftStoreError> {
    match bincode::serde::decode_from_slice::<T, _>(body, config()) {
        Ok((value, used)) if used == body.len() => Ok(value),
        Ok((_, used)) => Err(RaftStoreError::Codec(format!(
            "{} trailing bytes",
            body.len() - used
        ))),
        Err(e) => Err(RaftStoreError::Codec(e.to_string())),
    }
}

/// What a snapshot's data starts with since snapshots carry a format version: a tag, then
/// the version (big-endian `u32`), then the bincode body. A body of format 1 carried no
/// tag; its first byte was that of an `Option` (0 or 1), which no tag starts with.
const SNAPSHOT_TAG: [u8; 4] = *b"DLSN";

/// The snapshot format this build writes and the newest it reads. 1: an untagged body;
/// 2: the same body behind a tag and the version; 3: the engine carries the sessions still
/// losing their locks at its end (`dlock_core::STEP_WORK`); a body of format 1 or
/// 2 is read as `dlock_core::SnapshotV2`.
pub const SNAPSHOT_FORMAT: u32 = 3;

/// Encodes a snapshot body behind its tag and format version.
pub fn encode_snapshot<T: Serialize>(value: &T) -> Result<Vec<u8>, RaftStoreError> {
    let mut out = Vec::from(SNAPSHOT_TAG);
    out.extend_from_slice(&SNAPSHOT_FORMAT.to_be_bytes());
    out.extend(encode(value)?);
    Ok(out)
}

/// The format of a snapshot written by [`encode_snapshot`] or untagged (format 1), and its
/// body; one of a newer format is refused.
pub fn snapshot_body(data: &[u8]) -> Result<(u32, &[u8]), RaftStoreError> {
    let Some(rest) = data.strip_prefix(&SNAPSHOT_TAG) else {
        return Ok((1, data));
    };
    let (version, body) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| RaftStoreError::Codec("a snapshot cut short in its header".to_owned()))?;
    let found = u32::from_be_bytes(*version);
    if found > SNAPSHOT_FORMAT {
        return Err(RaftStoreError::Format {
            what: "a snapshot".to_owned(),
            found,
            supported: SNAPSHOT_FORMAT,
        });
    }
    Ok((found, body))
}

/// Decodes a snapshot body written by [`encode_snapshot`] or untagged (format 1), whatever
/// its format; one of a newer format is refused.
pub fn decode_snapshot<T: DeserializeOwned>(data: &[u8]) -> Result<T, RaftStoreError> {
    decode(snapshot_body(data)?.1)
}

/// Appends one record holding `value` to `out`; a value that encodes to nothing is refused
/// (an empty record would read as damage, see [`next_record`]).
pub fn put_record<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), RaftStoreError> {
    let body = encode(value)?;
    if body.is_empty() {
        return Err(RaftStoreError::Codec("an empty record".to_owned()));
    }
    let len = u32::try_from(body.len())
        .map_err(|_| RaftStoreError::Codec(format!("record of {} bytes", body.len())))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// What [`next_record`] found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordAt<'a> {
    /// A whole record with a matching checksum: its body, and the offset after it.
    Whole(&'a [u8], usize),
    /// Nothing more: the offset is the end of the data.
    End,
    /// A record cut short or damaged (a torn write), with the reason.
    Damaged(String),
}

/// Reads the record starting at `offset` in `data`.
pub fn next_record(data: &[u8], offset: usize) -> RecordAt<'_> {
    let rest = &data[offset.min(data.len())..];
    if rest.is_empty() {
        return RecordAt::End;
    }
    if rest.len() < RECORD_HEADER {
        return RecordAt::Damaged(format!("{} bytes of a record header", rest.len()));
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
    // No record is empty (every body encodes at least an enum's variant), so a zero length
    // is never taken for one: zeros are not records, whatever their checksum.
    if len == 0 || len > MAX_RECORD {
        return RecordAt::Damaged(format!("length {len}"));
    }
    let Some(body) = rest.get(RECORD_HEADER..RECORD_HEADER + len) else {
        return RecordAt::Damaged(format!(
            "a record of {len} bytes with {} present",
            rest.len() - RECORD_HEADER
        ));
    };
    if crc32fast::hash(body) != crc {
        return RecordAt::Damaged("checksum mismatch".to_owned());
    }
    RecordAt::Whole(body, offset + RECORD_HEADER + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let mut out = Vec::new();
        put_record(&mut out, &"first".to_owned()).unwrap();
        put_record(&mut out, &42u64).unwrap();
        let RecordAt::Whole(body, next) = next_record(&out, 0) else {
            panic!("first record")
        };
        assert_eq!(decode::<String>(body).unwrap(), "first");
        let RecordAt::Whole(body, end) = next_record(&out, next) else {
            panic!("second record")
        };
        assert_eq!(decode::<u64>(body).unwrap(), 42);
        assert_eq!(next_record(&out, end), RecordAt::End);

        // A torn tail: the last record cut anywhere is damaged, never misread.
        for cut in next + 1..end {
            assert!(matches!(
                next_record(&out[..cut], next),
                RecordAt::Damaged(_)
            ));
        }
        // Zeros are not a record (an empty body's checksum is zero too), and no empty record
        // is written.
        assert!(matches!(next_record(&[0; 16], 0), RecordAt::Damaged(_)));
        assert!(put_record(&mut Vec::new(), &()).is_err());
        // A flipped bit in a body fails the checksum.
        let mut flipped = out.clone();
        flipped[RECORD_HEADER] ^= 1;
        assert!(matches!(next_record(&flipped, 0), RecordAt::Damaged(_)));
    }

    /// [`dlock_core::LockRequest`] as it was encoded before its byte fields were
    /// serialized as bytes rather than as sequences of `u8`.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct SeqLockRequest {
        resource: Vec<u8>,
        mode: dlock_core::Mode,
        flags: dlock_core::LockFlags,
        value: Option<Vec<u8>>,
        timeout_ms: Option<u64>,
    }

    #[test]
    fn byte_fields_keep_their_encoding() {
        let mut req = dlock_core::LockRequest::new("app/db", dlock_core::Mode::PW);
        req.value = Some(vec![0, 1, 255, 7]);
        req.timeout_ms = Some(250);
        let seq = SeqLockRequest {
            resource: req.resource.clone(),
            mode: req.mode,
            flags: req.flags,
            value: req.value.clone(),
            timeout_ms: req.timeout_ms,
        };
        let bytes = encode(&req).unwrap();
        // Logs and peers of earlier builds read and write the same bytes.
        assert_eq!(bytes, encode(&seq).unwrap());
        assert_eq!(decode::<SeqLockRequest>(&bytes).unwrap(), seq);
        assert_eq!(
            decode::<dlock_core::LockRequest>(&encode(&seq).unwrap()).unwrap(),
            req
        );
        req.value = None;
        let none = SeqLockRequest { value: None, ..seq };
        assert_eq!(encode(&req).unwrap(), encode(&none).unwrap());
    }

    #[test]
    fn snapshots_carry_their_format_and_untagged_ones_are_format_one() {
        let body = (Some(7u64), "core".to_owned());
        let data = encode_snapshot(&body).unwrap();
        assert_eq!(&data[..4], &SNAPSHOT_TAG);
        assert_eq!(
            decode_snapshot::<(Option<u64>, String)>(&data).unwrap(),
            body
        );
        // Written before snapshots were tagged: the bare body.
        let untagged = encode(&body).unwrap();
        assert_eq!(
            decode_snapshot::<(Option<u64>, String)>(&untagged).unwrap(),
            body
        );
        let none = encode(&(None::<u64>, String::new())).unwrap();
        assert_eq!(
            decode_snapshot::<(Option<u64>, String)>(&none).unwrap(),
            (None, String::new())
        );
        // A newer format is refused, not misread.
        let mut newer = data.clone();
        newer[4..8].copy_from_slice(&(SNAPSHOT_FORMAT + 1).to_be_bytes());
        assert!(matches!(
            decode_snapshot::<(Option<u64>, String)>(&newer),
            Err(RaftStoreError::Format { found, supported: SNAPSHOT_FORMAT, .. }) if found == SNAPSHOT_FORMAT + 1
        ));
        assert!(decode_snapshot::<(Option<u64>, String)>(&data[..6]).is_err());
    }
}
