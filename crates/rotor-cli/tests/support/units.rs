//! The unit processes of a dev instance: where their state lives, and SIGKILL.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The state directory of unit `index` (0, 1: operational; 2: recovery).
pub(crate) fn unit_dir(info: &rotor_server::dev::DevInfo, index: usize) -> PathBuf {
    let name = if index < 2 {
        format!("operational-{index}")
    } else {
        format!("recovery-{index}")
    };
    info.dir.join("units").join(name)
}

/// The live unit process serving `dir`, as its `/proc` entry.
pub(crate) fn unit_process(dir: &Path) -> Option<PathBuf> {
    let wanted = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|proc_dir| {
            let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
                return false;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.iter().any(|a| a == "serve") && args.contains(&wanted) && !zombie(proc_dir)
        })
}

/// SIGKILLs the unit process serving `dir` and waits until it is gone.
pub(crate) fn kill_unit(dir: &Path) {
    let proc_dir = unit_process(dir).expect("a unit process serves the directory");
    let pid = proc_dir.file_name().unwrap().to_string_lossy().into_owned();
    std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    wait_gone(dir);
}

/// Waits until no process serves the unit directory `dir` (units of a killed `rotor dev`
/// notice within a quarter second).
pub(crate) fn wait_gone(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while unit_process(dir).is_some() {
        assert!(Instant::now() < deadline, "unit process did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn zombie(proc_dir: &Path) -> bool {
    std::fs::read_to_string(proc_dir.join("stat"))
        .map(|stat| {
            stat.split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}
