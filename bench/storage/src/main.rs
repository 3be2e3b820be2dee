//! `storage-layout`: the storage-layout measurement of issue 15 item 3
//! (placeholder; the measurement follows in the next commit).

fn main() {
    eprintln!("storage-layout: not written yet");
    std::process::exit(2);
}
