//! An sp pipeline whose middle stage runs in another process, reached only through zenoh: the
//! pipeline holds a proxy stage (`remote_stage`), the other process serves the stage
//! (`serve_stage`). Every value is checked by the last stage; a remote stage that dies ends the
//! pipeline with an error naming the proxy's stage, and nothing hangs.

use std::time::{Duration, Instant};

use libtest_mimic::Trial;

use crate::{TestResult, child_command, count, free_port, reap, report_value, spawn_child, trial};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial("pipeline_with_a_remote_middle_stage", || {
            remote_middle(None)
        }),
        trial("pipeline_whose_remote_stage_dies_names_the_proxy", || {
            remote_middle(Some(1500))
        }),
    ]
}

fn remote_middle(die_after: Option<u64>) -> TestResult {
    let n = count(20_000);
    let port = free_port();
    let die = die_after.map_or(String::new(), |k| format!(" die_after={k}"));
    let server = spawn_child("serve", &format!("listen={port} key=it/stage{die}"));
    let zenoh = sp_zenoh::peer_config(&[], &[&crate::endpoint(port)]).map_err(|e| e.to_string())?;
    let args = format!("n={n}");
    let started = Instant::now();
    let mut pipeline = sp::pipeline::Builder::new()
        .stage(child_command("gen", &args))
        .stage(sp_zenoh::remote_stage("it/stage", &zenoh).map_err(|e| e.to_string())?)
        .stage(child_command("check", &args))
        .stop_timeout(Duration::from_secs(10))
        .spawn(&sp::Config::new())
        .map_err(|e| e.to_string())?;
    let res = pipeline.wait();
    eprintln!("  {:?}: {res:?}", started.elapsed());
    match die_after {
        None => {
            res.map_err(|e| e.to_string())?;
            let report = reap(server)?;
            if report_value(&report, "records")? != n {
                return Err(format!("the remote stage reports {report}"));
            }
        }
        Some(_) => {
            match res {
                Err(sp::Error::StageFailed { stage: 1, .. }) => {}
                other => return Err(format!("expected the proxy (stage 1) named: {other:?}")),
            }
            drop(server);
        }
    }
    Ok(())
}
