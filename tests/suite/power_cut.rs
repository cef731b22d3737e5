//! Power cuts at every instant of a real workload. The daemon's file operations on its state
//! directory are recorded (`tools/power-cut-recorder.c`, preloaded) while the terminal sells,
//! ends and cancels payments, the journal is compacted, and the daemon is killed, restarted and
//! stopped; then the states a power cut could leave at each cut point are rebuilt with the model
//! of `docs/state.md` ("The power-cut test") and the real daemon is started on each. It must
//! start; every payment the terminal was told of before the cut must be pending or final as
//! it was told (nothing told final is pending); a repeated sale gets the same PaymentRequestId
//! with no new sale at the API.
//!
//! `cargo test` checks a bounded sample of the states; `POS_AGENT_POWER_CUT_STATES` asks for
//! another count (`all`: every one).

use crate::support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::io::Write as _;
use std::path::Path;

use crate::support::daemon::{Agent, Setup};
use crate::support::paths::SALE;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use pos_agent::ids::PaymentRequestId;
use pos_agent::serial::message::{PaymentResultStatus, Reply, SaleOrder, TerminalRequest};
use pos_agent::state::{
    encode_snapshot, load_from_bytes, read_directory, AgentState, SaleStage, RECORD_HEADER_LEN,
};
use uuid::Uuid;

const SECTOR: usize = 512;
/// States checked by `cargo test` when `POS_AGENT_POWER_CUT_STATES` does not say.
const DEFAULT_STATES: usize = 70;

/// One line of the recorder's log, or of the test's own ("told": what the terminal heard).
#[derive(Debug, Clone)]
enum Event {
    Open { fd: i32, flags: i32, path: String },
    Write { fd: i32, offset: u64, data: Vec<u8> },
    Truncate { fd: i32, len: u64 },
    Sync { fd: i32 },
    Close { fd: i32 },
    Rename { from: String, to: String },
    Unlink { path: String },
    Told(Told),
    Other,
}

#[derive(Debug, Clone)]
struct Told {
    code: String,
    payment_request_id: String,
    is_final: bool,
}

/// Whether `path` is the agent's `boot-times`, or the temporary file it is written through.
/// Those are left out of the recording: never synced, and read only in the boot that wrote
/// them, so after a power cut (another boot) the agent ignores them (docs/state.md, "A pending
/// payment's age"). The restarts here run in the same boot, where a file torn by the model
/// would be read as it never is after a real cut.
fn boot_times(path: &str) -> bool {
    Path::new(path)
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with("boot-times"))
}

fn parse(log: &[u8]) -> Vec<Event> {
    let events = parse_all(log);
    let mut boot_times_fds = HashSet::new();
    events
        .into_iter()
        .filter(|event| match event {
            Event::Open { fd, path, .. } if boot_times(path) => {
                boot_times_fds.insert(*fd);
                false
            }
            Event::Close { fd } => !boot_times_fds.remove(fd),
            Event::Write { fd, .. } | Event::Truncate { fd, .. } | Event::Sync { fd } => {
                !boot_times_fds.contains(fd)
            }
            Event::Rename { from, to } => !boot_times(from) && !boot_times(to),
            Event::Unlink { path } => !boot_times(path),
            _ => true,
        })
        .collect()
}

fn parse_all(log: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut at = 0;
    while at < log.len() {
        let end = at
            + log[at..]
                .iter()
                .position(|&b| b == b'\n')
                .expect("a whole line");
        let line = String::from_utf8_lossy(&log[at..end]).into_owned();
        let fields: Vec<&str> = line.split('\t').collect();
        let num = |i: usize| fields[i].parse::<i64>().expect("a number");
        at = end + 1;
        let event = match fields[0] {
            "open" => Event::Open {
                fd: num(1) as i32,
                flags: num(2) as i32,
                path: fields[3].to_owned(),
            },
            "write" => {
                let len = num(3) as usize;
                let data = log[at..at + len].to_vec();
                at += len;
                Event::Write {
                    fd: num(1) as i32,
                    offset: num(2) as u64,
                    data,
                }
            }
            "ftruncate" => Event::Truncate {
                fd: num(1) as i32,
                len: num(2) as u64,
            },
            "fsync" | "fdatasync" => Event::Sync { fd: num(1) as i32 },
            "close" => Event::Close { fd: num(1) as i32 },
            "rename" => Event::Rename {
                from: fields[1].to_owned(),
                to: fields[2].to_owned(),
            },
            "unlink" => Event::Unlink {
                path: fields[1].to_owned(),
            },
            "told" => Event::Told(Told {
                is_final: fields[1] == "final",
                code: fields[2].to_owned(),
                payment_request_id: fields[3].to_owned(),
            }),
            _ => Event::Other,
        };
        events.push(event);
    }
    events
}

#[derive(Debug, Clone)]
enum DataOp {
    Write(u64, Vec<u8>),
    Truncate(u64),
}

fn apply(content: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write(offset, data) => {
            let start = *offset as usize;
            if content.len() < start + data.len() {
                content.resize(start + data.len(), 0);
            }
            content[start..start + data.len()].copy_from_slice(data);
        }
        DataOp::Truncate(len) => content.resize(*len as usize, 0),
    }
}

/// A file: what is durable (synced), and the writes since, in call order.
#[derive(Debug, Clone, Default)]
struct Inode {
    durable: Vec<u8>,
    pending: Vec<DataOp>,
}

impl Inode {
    fn with(&self, ops: usize) -> Vec<u8> {
        let mut content = self.durable.clone();
        for op in &self.pending[..ops] {
            apply(&mut content, op);
        }
        content
    }

    fn current(&self) -> Vec<u8> {
        self.with(self.pending.len())
    }
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, usize),
    Unlink(String),
    Rename(String, String),
}

fn apply_dir(names: &mut BTreeMap<String, usize>, op: &DirOp) {
    match op {
        DirOp::Link(name, inode) => {
            names.insert(name.clone(), *inode);
        }
        DirOp::Unlink(name) => {
            names.remove(name);
        }
        DirOp::Rename(from, to) => {
            if let Some(inode) = names.remove(from) {
                names.insert(to.clone(), inode);
            }
        }
    }
}

/// The state directory as the model sees it: a file's data is durable up to its last
/// `fsync`/`fdatasync`, and its later writes persist as a prefix in call order, the last one
/// possibly torn at a sector boundary, with its new size and zeros where its data did not
/// reach the disk, or with any one of its sectors missing or alone; a create, rename or unlink
/// is durable once the directory is synced, and those since persist as a prefix in call order.
#[derive(Default)]
struct Model {
    dir: String,
    inodes: Vec<Inode>,
    names: BTreeMap<String, usize>,
    durable_names: BTreeMap<String, usize>,
    pending_dir: Vec<DirOp>,
    /// File descriptor → inode (`None`: the directory itself).
    fds: HashMap<i32, Option<usize>>,
}

type Files = BTreeMap<String, Vec<u8>>;

impl Model {
    fn name<'a>(&self, path: &'a str) -> Option<&'a str> {
        path.strip_prefix(&self.dir)?.strip_prefix('/')
    }

    fn step(&mut self, event: &Event) {
        match event {
            Event::Open { fd, flags, path } => {
                let Some(name) = self.name(path).map(str::to_owned) else {
                    self.fds.insert(*fd, None);
                    return;
                };
                let flags = OFlag::from_bits_truncate(*flags);
                let inode = match self.names.get(&name) {
                    Some(&inode) => {
                        if flags.contains(OFlag::O_TRUNC) {
                            self.inodes[inode].pending.push(DataOp::Truncate(0));
                        }
                        inode
                    }
                    None => {
                        self.inodes.push(Inode::default());
                        let inode = self.inodes.len() - 1;
                        self.names.insert(name.clone(), inode);
                        self.pending_dir.push(DirOp::Link(name, inode));
                        inode
                    }
                };
                self.fds.insert(*fd, Some(inode));
            }
            Event::Write { fd, offset, data } => {
                if let Some(&Some(inode)) = self.fds.get(fd) {
                    self.inodes[inode]
                        .pending
                        .push(DataOp::Write(*offset, data.clone()));
                }
            }
            Event::Truncate { fd, len } => {
                if let Some(&Some(inode)) = self.fds.get(fd) {
                    self.inodes[inode].pending.push(DataOp::Truncate(*len));
                }
            }
            Event::Sync { fd } => match self.fds.get(fd) {
                Some(&Some(inode)) => {
                    let inode = &mut self.inodes[inode];
                    inode.durable = inode.current();
                    inode.pending.clear();
                }
                Some(None) => {
                    self.durable_names = self.names.clone();
                    self.pending_dir.clear();
                }
                None => {}
            },
            Event::Close { fd } => {
                self.fds.remove(fd);
            }
            Event::Rename { from, to } => {
                if let (Some(from), Some(to)) = (self.name(from), self.name(to)) {
                    let op = DirOp::Rename(from.to_owned(), to.to_owned());
                    apply_dir(&mut self.names, &op);
                    self.pending_dir.push(op);
                }
            }
            Event::Unlink { path } => {
                if let Some(name) = self.name(path) {
                    let op = DirOp::Unlink(name.to_owned());
                    apply_dir(&mut self.names, &op);
                    self.pending_dir.push(op);
                }
            }
            Event::Told(_) | Event::Other => {}
        }
    }

    /// Every state a power cut now could leave, each with what kind of cut it is.
    fn crash_states(&self) -> Vec<(&'static str, Files)> {
        let mut states = Vec::new();
        for prefix in 0..=self.pending_dir.len() {
            let mut names = self.durable_names.clone();
            for op in &self.pending_dir[..prefix] {
                apply_dir(&mut names, op);
            }
            let whole = prefix == self.pending_dir.len();
            let lost = names
                .iter()
                .map(|(name, &inode)| (name.clone(), self.inodes[inode].durable.clone()))
                .collect();
            let kept = names
                .iter()
                .map(|(name, &inode)| (name.clone(), self.inodes[inode].current()))
                .collect();
            states.push((
                if whole {
                    "unsynced data lost"
                } else {
                    "directory prefix"
                },
                lost,
            ));
            states.push((
                if whole {
                    "everything kept"
                } else {
                    "directory prefix"
                },
                kept,
            ));
            if !whole {
                continue;
            }
            // The append in flight on the journal, torn every way the model allows.
            let Some(&inode) = names.get("state.journal") else {
                continue;
            };
            let inode = &self.inodes[inode];
            let Some(DataOp::Write(offset, data)) = inode.pending.last() else {
                continue;
            };
            let base = inode.with(inode.pending.len() - 1);
            let (offset, end) = (*offset as usize, *offset as usize + data.len());
            let mut with = |kind: &'static str, content: Vec<u8>| {
                let mut files: Files = kept_files(&names, self);
                files.insert("state.journal".into(), content);
                states.push((kind, files));
            };
            let boundaries: Vec<usize> = (offset..end)
                .filter(|b| b % SECTOR == 0)
                .chain(std::iter::once(offset))
                .collect();
            for &boundary in &boundaries {
                let mut torn = base.clone();
                apply(
                    &mut torn,
                    &DataOp::Write(offset as u64, data[..boundary - offset].to_vec()),
                );
                if boundary > offset {
                    with("append torn at a sector boundary", torn.clone());
                }
                let mut zeros = torn;
                zeros.resize(end.max(zeros.len()), 0);
                with("append's size without all its data (zeros)", zeros);
            }
            let sectors: Vec<usize> = (offset - offset % SECTOR..end).step_by(SECTOR).collect();
            if sectors.len() > 1 {
                for &sector in &sectors {
                    let (from, until) = (sector.max(offset), (sector + SECTOR).min(end));
                    let mut missing = base.clone();
                    apply(&mut missing, &DataOp::Write(offset as u64, data.clone()));
                    missing[from..until].fill(0);
                    with("one sector of the append missing", missing);
                    let mut alone = base.clone();
                    alone.resize(end.max(alone.len()), 0);
                    alone[offset..end].fill(0);
                    alone[from..until].copy_from_slice(&data[from - offset..until - offset]);
                    with("one sector of the append alone", alone);
                }
            }
        }
        states
    }
}

fn kept_files(names: &BTreeMap<String, usize>, model: &Model) -> Files {
    names
        .iter()
        .map(|(name, &inode)| (name.clone(), model.inodes[inode].current()))
        .collect()
}

/// A rebuilt state: where it was cut, what kind of cut, the files, what the terminal was told.
struct CrashState {
    cut: usize,
    kind: &'static str,
    files: Files,
    told: Vec<Told>,
}

/// Every distinct state, each with the most the terminal had been told when it could arise
/// (the strictest check of it).
fn rebuild(events: &[Event], dir: &Path) -> (Vec<CrashState>, usize) {
    let mut model = Model {
        dir: dir.display().to_string(),
        ..Model::default()
    };
    let mut told = Vec::new();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut states: Vec<CrashState> = Vec::new();
    let mut cut_points = 0;
    for (cut, event) in events.iter().enumerate() {
        model.step(event);
        if let Event::Told(t) = event {
            told.push(t.clone());
        }
        if matches!(event, Event::Other) {
            continue;
        }
        cut_points += 1;
        for (kind, files) in model.crash_states() {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            files.hash(&mut hasher);
            let state = CrashState {
                cut,
                kind,
                files,
                told: told.clone(),
            };
            match seen.get(&hasher.finish()) {
                Some(&at) => {
                    states[at] = CrashState {
                        kind: states[at].kind,
                        ..state
                    }
                }
                None => {
                    seen.insert(hasher.finish(), states.len());
                    states.push(state);
                }
            }
        }
    }
    (states, cut_points)
}

/// Every state the records written pass through, one record at a time (JSON): a state read
/// after a cut must be one of them, never a mix of older and newer entries.
fn states_written(events: &[Event], dir: &Path) -> HashSet<String> {
    let model = Model {
        dir: dir.display().to_string(),
        ..Model::default()
    };
    let mut names: HashMap<i32, String> = HashMap::new();
    let mut current = AgentState::default();
    let mut states = HashSet::from([serde_json::to_string(&current).unwrap()]);
    for event in events {
        match event {
            Event::Open { fd, path, .. } => {
                names.insert(*fd, model.name(path).unwrap_or_default().to_owned());
            }
            Event::Write { fd, data, .. } => match names.get(fd).map(String::as_str) {
                Some("state.journal") => {
                    let snapshot = encode_snapshot(&current).unwrap();
                    let mut end = 0;
                    while end + RECORD_HEADER_LEN <= data.len() {
                        let len = u32::from_le_bytes(data[end..end + 4].try_into().unwrap());
                        end += RECORD_HEADER_LEN + len as usize;
                        let loaded = load_from_bytes(Some(&snapshot), Some(&data[..end]))
                            .expect("a record the daemon wrote");
                        states.insert(serde_json::to_string(&loaded.state).unwrap());
                        current = loaded.state;
                    }
                }
                Some("state.json.tmp") => {
                    let loaded = load_from_bytes(Some(data), None).expect("a whole snapshot");
                    states.insert(serde_json::to_string(&loaded.state).unwrap());
                    current = loaded.state;
                }
                _ => {}
            },
            _ => {}
        }
    }
    states
}

/// The states to check: all, or an even spread over the cut points of each kind.
fn sample(states: Vec<CrashState>, count: usize) -> Vec<CrashState> {
    if count >= states.len() {
        return states;
    }
    let mut by_kind: BTreeMap<&str, Vec<CrashState>> = BTreeMap::new();
    for state in states {
        by_kind.entry(state.kind).or_default().push(state);
    }
    let per_kind = count.div_ceil(by_kind.len());
    let mut picked = Vec::new();
    for (_, states) in by_kind {
        let step = (states.len() as f64 / per_kind as f64).max(1.0);
        let mut next = 0.0;
        for (i, state) in states.into_iter().enumerate() {
            if i as f64 >= next {
                picked.push(state);
                next += step;
            }
        }
    }
    picked.sort_by_key(|s| s.cut);
    picked
}

/// Appends what the terminal was told to the log, between the daemon's lines.
fn tell(log: &Path, told: &Told) {
    let line = format!(
        "told\t{}\t{}\t{}\n",
        if told.is_final { "final" } else { "started" },
        told.code,
        told.payment_request_id
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .unwrap();
    file.write_all(line.as_bytes()).unwrap();
}

/// Four sales at once (their records share syncs), then two of them ended by the terminal's
/// result, one cancelled by the terminal and one left pending.
async fn round(agent: &mut Agent, log: &Path, n: usize) {
    let link = agent.terminal.link().clone();
    let sales = (0..4).map(|_| {
        let link = link.clone();
        async move {
            let code = Uuid::new_v4();
            let reply = link
                .request(TerminalRequest::Sale(SaleOrder {
                    merchant_unique_code: code,
                    amount_minor: std::num::NonZeroU64::new(100 + n as u64).unwrap(),
                    currency_id: None,
                    display_code: None,
                }))
                .await;
            (code, reply)
        }
    });
    let mut started = Vec::new();
    for (code, reply) in futures_util::future::join_all(sales).await {
        match reply {
            Ok(Reply::SaleStarted {
                payment_request_id, ..
            }) => {
                let told = Told {
                    code: code.to_string(),
                    payment_request_id,
                    is_final: false,
                };
                tell(log, &told);
                started.push(told);
            }
            other => panic!("sale: {other:?}\nlog:\n{}", agent.log()),
        }
    }
    let ends = started.iter().take(3).enumerate().map(|(i, told)| {
        let link = link.clone();
        let id = told.payment_request_id.clone();
        async move {
            let request = if i == 2 {
                TerminalRequest::Cancel {
                    payment_request_id: Some(id),
                }
            } else {
                TerminalRequest::PaymentResult {
                    payment_request_id: id,
                    status: if i == 0 {
                        PaymentResultStatus::Succeeded
                    } else {
                        PaymentResultStatus::Failed
                    },
                }
            };
            link.request(request).await
        }
    });
    for (told, reply) in started
        .iter()
        .zip(futures_util::future::join_all(ends).await)
    {
        match reply {
            Ok(Reply::Ok(_) | Reply::Cancelled { .. }) => tell(
                log,
                &Told {
                    is_final: true,
                    ..told.clone()
                },
            ),
            other => panic!("end of a payment: {other:?}\nlog:\n{}", agent.log()),
        }
    }
}

fn snapshots_written(log: &Path) -> usize {
    parse(&std::fs::read(log).unwrap_or_default())
        .iter()
        .filter(|e| matches!(e, Event::Rename { to, .. } if to.ends_with("/state.json")))
        .count()
}

/// The recorded workload: rounds until the journal was compacted twice, a kill -9 and a
/// restart, more rounds, and a clean stop with payments pending (the shutdown's cancels).
async fn record(agent: &mut Agent, log: &Path) {
    // The harness's first start wrote state unrecorded: start again from nothing, recorded.
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    std::fs::remove_dir_all(&agent.state_dir).unwrap();
    let recorder = support::preload::library("power-cut-recorder.c");
    agent.set_env("LD_PRELOAD", recorder.display().to_string());
    agent.set_env("POWER_CUT_DIR", agent.state_dir.display().to_string());
    agent.set_env("POWER_CUT_LOG", log.display().to_string());
    agent.forget_notifications();
    agent.spawn();
    agent.wait_notification("STATUS=connected").await;
    let mut n = 0;
    while snapshots_written(log) < 3 {
        assert!(n < 200, "no second compaction after {n} rounds");
        round(agent, log, n).await;
        n += 1;
    }
    // A kill while the records of four sales' PaymentRequestIds are written and not yet
    // synced (syncs made slow for it), then the same sales again: answered from what the
    // killed process left in the page cache, which the start must make durable first.
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    let slow = support::slow_fsync::shim();
    agent.set_env(
        "LD_PRELOAD",
        format!("{}:{}", recorder.display(), slow.display()),
    );
    agent.set_env("SLOW_FSYNC_MS", "300".into());
    agent.forget_notifications();
    agent.spawn();
    agent.wait_notification("STATUS=connected").await;
    let codes: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let sales_before = agent.sim.requests_to("POST", SALE).len();
    let link = agent.terminal.link().clone();
    let selling = tokio::spawn({
        let codes = codes.clone();
        async move {
            for code in codes {
                let link = link.clone();
                tokio::spawn(async move {
                    let _ = link
                        .request(TerminalRequest::Sale(SaleOrder {
                            merchant_unique_code: code,
                            amount_minor: std::num::NonZeroU64::new(7).unwrap(),
                            currency_id: None,
                            display_code: None,
                        }))
                        .await;
                });
            }
        }
    });
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let answered = agent.sim.requests_to("POST", SALE).len() - sales_before;
        // The last thing done to the files is a journal write: an id's record, being synced.
        let writes_since = answered == codes.len()
            && matches!(
                parse(&std::fs::read(log).unwrap()).last(),
                Some(Event::Write { .. })
            );
        if writes_since {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let all = parse_all(&std::fs::read(log).unwrap());
            let tail: Vec<String> = all[all.len().saturating_sub(12)..]
                .iter()
                .map(|event| match event {
                    Event::Write { fd, offset, data } => {
                        format!("write fd {fd} at {offset}, {} bytes", data.len())
                    }
                    other => format!("{other:?}"),
                })
                .collect();
            panic!(
                "no id record written ({answered} of {} sales at the API); the recording ends \
                 with {tail:#?}\nthe daemon's log:\n{}",
                codes.len(),
                agent.log()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    selling.abort();
    agent.set_env("LD_PRELOAD", recorder.display().to_string());
    agent.remove_env("SLOW_FSYNC_MS");
    agent.forget_notifications();
    agent.spawn();
    agent.wait_notification("STATUS=connected").await;
    for code in codes {
        match agent.sale(code, 7).await {
            Reply::SaleStarted {
                payment_request_id, ..
            } => tell(
                log,
                &Told {
                    code: code.to_string(),
                    payment_request_id,
                    is_final: false,
                },
            ),
            other => panic!("sale {code} again: {other:?}\nlog:\n{}", agent.log()),
        }
    }
    for _ in 0..3 {
        round(agent, log, n).await;
        n += 1;
    }
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit().await.success(), "{}", agent.log());
    agent.remove_env("LD_PRELOAD");
}

/// Starts the daemon on `state` and checks it; `Err` says what went wrong.
async fn check(agent: &mut Agent, state: &CrashState) -> Result<(), String> {
    std::fs::remove_dir_all(&agent.state_dir).unwrap();
    std::fs::create_dir(&agent.state_dir).unwrap();
    for (name, content) in &state.files {
        std::fs::write(agent.state_dir.join(name), content).unwrap();
    }
    let sales_before = agent.sim.requests_to("POST", SALE).len();
    agent.forget_notifications();
    agent.spawn();
    if let Err(status) = agent.ready_or_exit().await {
        return Err(format!("refused to start: {status}"));
    }
    let result = check_started(agent, state).await;
    agent.signal(Signal::SIGKILL);
    agent.wait_exit().await;
    let sales_after = agent.sim.requests_to("POST", SALE).len();
    result?;
    if sales_after != sales_before {
        return Err(format!(
            "{} new sales at the API",
            sales_after - sales_before
        ));
    }
    Ok(())
}

/// Whether every payment the terminal was told of is pending or final as it was told.
fn kept_as_told(
    state: &CrashState,
    pending: &[String],
    stored: &pos_agent::state::AgentState,
) -> Result<(), String> {
    // The last word the terminal heard about each payment.
    let mut told: BTreeMap<&str, &Told> = BTreeMap::new();
    for t in &state.told {
        told.insert(&t.payment_request_id, t);
    }
    for (id, t) in &told {
        let is_pending = pending.iter().any(|p| p == id);
        let sale = stored.sales.get(&t.code).map(|s| &s.stage);
        let sale_id = match sale {
            Some(SaleStage::Started { payment_request_id }) => Some(payment_request_id),
            Some(SaleStage::Final {
                payment_request_id, ..
            }) => payment_request_id.as_ref(),
            _ => None,
        };
        if sale_id.map(PaymentRequestId::as_str) != Some(id) {
            return Err(format!("sale {} lost its payment {id}: {sale:?}", t.code));
        }
        let is_final = matches!(sale, Some(SaleStage::Final { .. }));
        if t.is_final && is_pending {
            return Err(format!("{id} was told final and is pending"));
        }
        if !t.is_final && !is_pending && !is_final {
            return Err(format!(
                "{id} was told started and is neither pending nor final"
            ));
        }
    }
    Ok(())
}

async fn check_started(agent: &mut Agent, state: &CrashState) -> Result<(), String> {
    // The daemon may be ending a payment as it starts (a cancel marked before the cut is sent
    // again): `status` answers from memory and the file follows a sync later, so a mismatch
    // is looked at again until it settles or the wait runs out.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let pending = agent.pending_ids().await;
        let stored = read_directory(&agent.state_dir).map_err(|e| e.to_string())?;
        match kept_as_told(state, &pending, &stored) {
            Ok(()) => break,
            Err(why) if tokio::time::Instant::now() >= deadline => return Err(why),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(25)).await,
        }
    }
    // A repeated sale of the last code told started, and of the last told final.
    for t in [
        state.told.iter().rev().find(|t| !t.is_final),
        state.told.iter().rev().find(|t| t.is_final),
    ]
    .into_iter()
    .flatten()
    {
        let code = Uuid::parse_str(&t.code).unwrap();
        let sale = SaleOrder {
            merchant_unique_code: code,
            amount_minor: std::num::NonZeroU64::MIN,
            currency_id: None,
            display_code: None,
        };
        match agent.terminal.request(TerminalRequest::Sale(sale)).await {
            Ok(Reply::SaleStarted {
                payment_request_id, ..
            }) if payment_request_id == t.payment_request_id => {}
            Err(e) => {
                return Err(format!(
                    "repeated sale {}: no answer ({e:?}); the daemon's log:\n{}",
                    t.code,
                    agent.log()
                ))
            }
            other => return Err(format!("repeated sale {}: {other:?}", t.code)),
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_power_cut_at_any_instant_loses_nothing_and_never_stops_the_start() {
    if !support::preload::reaches_the_daemon("the power-cut recording") {
        return;
    }
    let mut agent = Agent::connected(Setup {
        log_level: "warn",
        ..Setup::default()
    })
    .await;
    let log = agent.dir.path().join("power-cut.log");
    record(&mut agent, &log).await;

    let events = parse(&std::fs::read(&log).unwrap());
    let (states, cut_points) = rebuild(&events, &agent.state_dir);
    let wanted = match std::env::var("POS_AGENT_POWER_CUT_STATES").as_deref() {
        Ok("all") => usize::MAX,
        Ok(n) => n
            .parse()
            .expect("POS_AGENT_POWER_CUT_STATES: a number or all"),
        Err(_) => DEFAULT_STATES,
    };
    let all = states.len();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for state in &states {
        *kinds.entry(state.kind).or_default() += 1;
    }
    // Every state, read by the loader alone: never refused, never a mix, nothing told lost.
    let written = states_written(&events, &agent.state_dir);
    let mut failures = Vec::new();
    for state in &states {
        let read = load_from_bytes(
            state.files.get("state.json").map(Vec::as_slice),
            state.files.get("state.journal").map(Vec::as_slice),
        );
        match read {
            Err(e) => failures.push(format!(
                "cut {} ({}): refused by the reader: {e}",
                state.cut, state.kind
            )),
            Ok(loaded) if !written.contains(&serde_json::to_string(&loaded.state).unwrap()) => {
                failures.push(format!(
                    "cut {} ({}): a state no sequence of whole records leads to (a loss or a mix)",
                    state.cut, state.kind
                ))
            }
            Ok(loaded) => {
                let pending: Vec<String> = loaded
                    .state
                    .payments
                    .keys()
                    .map(|id| id.to_string())
                    .collect();
                if let Err(why) = kept_as_told(state, &pending, &loaded.state) {
                    failures.push(format!(
                        "cut {} ({}): as read: {why}",
                        state.cut, state.kind
                    ));
                }
            }
        }
    }
    let read_alone = failures.len();
    let picked = sample(states, wanted);
    let started = std::time::Instant::now();
    for state in &picked {
        if let Err(why) = check(&mut agent, state).await {
            failures.push(format!("cut {} ({}): {why}", state.cut, state.kind));
        }
    }
    let refusals = failures.iter().filter(|f| f.contains("refused")).count();
    eprintln!(
        "power cut: {} events, {cut_points} cut points, {all} distinct states ({kinds:?}), \
         all read by the loader ({read_alone} failed); {} started the daemon, in {:.1} s: \
         {refusals} refusals, {} losses",
        events.len(),
        picked.len(),
        started.elapsed().as_secs_f64(),
        failures.len() - refusals,
    );
    assert!(failures.is_empty(), "{failures:#?}\nlog:\n{}", agent.log());
    agent.finish().await;
}
