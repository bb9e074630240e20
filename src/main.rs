//! The `e2enc` command line: one file per subcommand under `cmd/`, anyhow only here.

mod cmd;
mod peak;
mod report;
mod util;

use clap::{Parser, Subcommand};

/// e2enc: compile, inspect and run E2ENet 3D segmentation networks.
///
/// A model is a `model.json` (see docs/model-json.md) naming a safetensors
/// weights file whose tensors carry the official checkpoint's names, so weights
/// converted from the authors' released PyTorch checkpoints run unchanged.
///
/// Start here:
///   e2enc demo        train, compile and run E2ENet on a brain MRI (~2.5 min)
///   e2enc check       reproduce the authors' released network (seconds)
///   e2enc init -o my-model --density 0.2
///   e2enc inspect my-model/model.json [--optimized]
///   e2enc optimize my-model/model.json --report
///   e2enc compile my-model/model.json -o my-bundle   (signed with your key)
///   e2enc keygen -o team.key          (a key to sign with: --sign team.key)
///   e2enc bench my-bundle --profile
///   e2enc run my-bundle --input x.safetensors --output y.safetensors
///   e2enc segment my-bundle ct.nii.gz -o seg.nii.gz [--tta] [--preview p.png]
///   e2enc segment my-bundle -i imagesTs -o predTs    (nnU-Net naming)
///   e2enc evaluate labels.nii.gz truth.nii.gz [--json scores.json]
///   e2enc compare cand-bundle ref-bundle -i imagesTs --labels labelsTs   (accuracy gates)
///   e2enc train my-dataset -o my-run  (nnU-Net raw folder; sparse DSFF)
#[derive(Parser)]
#[command(name = "e2enc", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    Init(cmd::init::Args),
    Compile(cmd::compile::Args),
    Keygen(cmd::keygen::Args),
    Bench(cmd::bench::Args),
    Inspect(cmd::inspect::Args),
    Optimize(cmd::optimize::Args),
    Run(cmd::run::Args),
    Demo(cmd::demo::Args),
    Segment(cmd::segment::Args),
    Evaluate(cmd::evaluate::Args),
    Compare(cmd::compare::Args),
    Check(cmd::check::Args),
    Train(cmd::train::Args),
}

fn main() -> std::process::ExitCode {
    // Die quietly on a closed pipe (`e2enc inspect ... | head`) like other command-line tools,
    // instead of panicking inside println!.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let res = match cli.cmd {
        Command::Init(a) => cmd::init::main(a),
        Command::Compile(a) => cmd::compile::main(a),
        Command::Keygen(a) => cmd::keygen::main(a),
        Command::Bench(a) => cmd::bench::main(a),
        Command::Inspect(a) => cmd::inspect::main(a),
        Command::Optimize(a) => cmd::optimize::main(a),
        Command::Run(a) => cmd::run::main(a),
        Command::Demo(a) => cmd::demo::main(a),
        Command::Segment(a) => cmd::segment::main(a),
        Command::Evaluate(a) => cmd::evaluate::main(a),
        Command::Compare(a) => cmd::compare::main(a),
        Command::Check(a) => cmd::check::main(a),
        Command::Train(a) => cmd::train::main(a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", util::error_text(&e));
            std::process::ExitCode::from(1)
        }
    }
}
