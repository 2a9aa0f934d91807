//! Transactions in the log: open transactions hold back the last stable offset, markers
//! end them, aborts are remembered for read_committed readers, and all of it survives a
//! restart, clean or not.

use runnel_log::batch::build_batch;
use runnel_log::{AbortedTxn, BatchHeader, LogConfig, LogError, PartitionLog};

/// A transactional batch of one record from `pid`/`epoch` with sequence `seq`.
fn txn_batch(pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let mut b = build_batch(&[(Some(b"k"), Some(b"v"))], 1000);
    b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn markers_move_the_last_stable_offset_and_record_aborts() {
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
            log.append(&mut build_batch(&[(None, Some(b"plain"))], 0), 0, 0)
                .unwrap(); // 0
            log.append(&mut txn_batch(1, 0, 0), 0, 0).unwrap(); // 1: txn A starts
            log.append(&mut txn_batch(2, 0, 0), 0, 0).unwrap(); // 2: txn B starts
            log.append(&mut txn_batch(1, 0, 1), 0, 0).unwrap(); // 3
            assert_eq!(log.last_stable_offset(), 1);
            assert_eq!(log.append_marker(1, 0, false, 0, 0, 0).unwrap(), 4); // abort A
            assert_eq!(log.last_stable_offset(), 2, "B is still open");
            assert_eq!(log.append_marker(2, 0, true, 0, 0, 0).unwrap(), 5); // commit B
            assert_eq!(log.last_stable_offset(), 6);
            log.append(&mut txn_batch(2, 0, 1), 0, 0).unwrap(); // 6: txn B2 open
            assert_eq!(log.last_stable_offset(), 6);
            if clean {
                log.close().unwrap();
            }
        }
        let mut log = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
        assert_eq!(log.last_stable_offset(), 6, "clean={clean}");
        assert_eq!(
            log.aborted_transactions(0, 7),
            vec![AbortedTxn {
                producer_id: 1,
                first_offset: 1,
                last_offset: 4
            }]
        );
        assert!(log.aborted_transactions(5, 7).is_empty());
        // The marker is a control batch readers can see.
        let r = log.read(4, 1000, i64::MAX, true).unwrap();
        assert!(BatchHeader::parse(&r.records).unwrap().is_control());
        // A fenced (older) epoch cannot write a marker; a bumped one can.
        assert!(matches!(
            log.append_marker(2, -1, false, 0, 0, 0),
            Err(LogError::InvalidProducerEpoch { .. })
        ));
        log.append_marker(2, 1, false, 0, 0, 0).unwrap();
        assert_eq!(log.last_stable_offset(), log.log_end_offset());
        // The old epoch's data is now refused.
        assert!(matches!(
            log.append(&mut txn_batch(2, 0, 2), 0, 0),
            Err(LogError::InvalidProducerEpoch { .. })
        ));
    }
}
