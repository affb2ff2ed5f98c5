//! Fuzz target for `udpkit merge`'s reader of interval logs: any bytes as a file, read line
//! by line with every check, every histogram decoded. The promise checked: no panic, no
//! allocation a file's numbers size (the limits hold: a run under the fuzzer's memory limit
//! is the check), and a line read again alone parses as it did in the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udpkit::measure::hlog::{Reader, interval_line};

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = Reader::new("fuzz.hlog", data) else {
        return;
    };
    for _ in 0..10_000 {
        match reader.next_interval() {
            Ok(Some(interval)) => {
                let _ = reader.decode(&interval);
                let (at, len) = reader.last_line();
                let line = &data[at as usize..(at as usize + len).min(data.len())];
                if let Some(again) = interval_line(line) {
                    assert_eq!(again.start, interval.start);
                    assert_eq!(again.encoded, interval.encoded);
                }
            }
            _ => break,
        }
    }
});
