//! `cargo xtask demo`: the release on a throwaway PostgreSQL, from an empty cluster to a
//! verified database. Nothing outside the temporary cluster is touched.

use std::time::Instant;

use anyhow::Result;
use pico_args::Arguments;

use crate::cli::{self, Globals};
use crate::cluster::TempCluster;
use crate::db::DatabaseUrl;
use crate::error::Outcome;
use crate::migrate::{self, DeployOptions};
use crate::verify;

const HELP: &str = "\
cargo xtask demo [--keep]: starts a throwaway PostgreSQL (initdb in a temp dir, a free port),
deploys the migrations, and prints `migrate status` and the verification tables.
--keep leaves the cluster running and prints its URL.
";

pub fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let keep = args.contains("--keep");
    cli::finish(args, "demo")?;
    let migrations = globals.migrations()?;

    let started = Instant::now();
    eprintln!("starting a throwaway PostgreSQL ...");
    let mut cluster = TempCluster::start()?;
    let admin = DatabaseUrl::parse(&cluster.url("postgres"))?;
    admin
        .connect()?
        .batch_execute("CREATE DATABASE datahub_demo")?;
    let url = DatabaseUrl::parse(&cluster.url("datahub_demo"))?;
    let mut client = url.connect()?;
    eprintln!(
        "PostgreSQL ready on port {} in {:.1} s",
        cluster.port(),
        started.elapsed().as_secs_f64()
    );

    let report = migrate::deploy(&mut client, &url, &migrations, &DeployOptions::default())?;
    println!("== migrate deploy\n{}", report.render());
    let status = migrate::status(&mut client, &migrations)?;
    println!("== migrate status\n{}", status.render());
    let verification = verify::verify(&mut client)?;
    println!("== verify\n{}", verification.render());

    if keep {
        let database_url = cluster.socket_url("datahub_demo");
        let stop = cluster.keep();
        println!("The cluster keeps running: DATABASE_URL={database_url}");
        println!("Stop it with: {stop}");
    } else {
        drop(client);
        cluster.stop();
    }
    eprintln!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    Ok(Outcome::from_ready(
        status.is_up_to_date() && verification.is_ok(),
    ))
}
