//! `softprobe capture run`: open a capture session, run the driver, close, write the case.

use super::client::connect;
use super::session::close_to;
use super::{CliError, Report, exit};
use crate::cli::{CaptureArgs, CaptureCommand};
use serde_json::json;
use softprobe_sdk::Mode;
use std::time::Duration;

pub(super) async fn run(args: CaptureArgs) -> Result<Report, CliError> {
    let client = connect(&args.client, Duration::from_secs(10))?;
    let CaptureCommand::Run {
        driver,
        out,
        timeout,
    } = args.command;
    let session = client.start_session(Mode::Capture).await?;
    let id = session.id().to_owned();

    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&driver)
        .env("SOFTPROBE_SESSION_ID", &id)
        .env("SOFTPROBE_RUNTIME_URL", client.url())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| {
            CliError::new(
                exit::GENERIC,
                "driver_failed",
                format!("cannot start the driver `{driver}`: {err}"),
                "check the command and that `sh` exists",
            )
        })?;
    let (driver_code, driver_error) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => (
            status.code().unwrap_or(1),
            (!status.success()).then(|| format!("the driver exited with {status}")),
        ),
        Ok(Err(err)) => (1, Some(format!("waiting for the driver failed: {err}"))),
        Err(_) => {
            // Stops the driver's shell; use `exec` in the driver to have the command itself
            // stopped.
            let _ = child.kill().await;
            (
                1,
                Some(format!(
                    "the driver timed out after {}",
                    humantime::format_duration(timeout)
                )),
            )
        }
    };

    // Close even when the driver failed: what was captured is kept.
    let stats = session
        .stats_json()
        .await
        .map(|s| s["stats"].clone())
        .unwrap_or_default();
    let capture_path = close_to(&client, &id, out.as_deref())
        .await?
        .unwrap_or_default();
    let mut report = Report::fields(json!({
        "sessionId": id,
        "exitCode": driver_code,
        "capturePath": capture_path,
        "stats": stats,
        "driverError": driver_error,
    }))
    .line(format!(
        "captured session {id}: {} spans -> {capture_path}",
        stats["extractedSpans"]
    ));
    if let Some(error) = driver_error {
        eprintln!("error: {error}");
        report.exit = u8::try_from(driver_code)
            .ok()
            .filter(|c| *c != 0)
            .unwrap_or(exit::GENERIC);
    }
    Ok(report)
}
