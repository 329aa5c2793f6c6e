//! `bench-receiver [--port N] [--threads N]`: the fast loopback receiver of the benchmarks.
//! Prints `listening 127.0.0.1:PORT` once bound, then serves until killed.

use std::net::SocketAddr;

fn main() {
    let mut port = 0u16;
    let mut threads = 2usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--port" => port = v.parse().expect("--port N"),
            "--threads" => threads = v.parse().expect("--threads N"),
            _ => {
                eprintln!("usage: bench-receiver [--port N] [--threads N]");
                std::process::exit(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let r = rt.block_on(beema_hooks_bench::receiver::serve(addr, |a| {
        println!("listening {a}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }));
    if let Err(e) = r {
        eprintln!("bench-receiver: {e}");
        std::process::exit(1);
    }
}
