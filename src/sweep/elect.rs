//! The sweeper's leader election: every replica runs [`campaign`] on one Lease; the rule is
//! [`crate::team::election`]'s. Whoever acts asks [`Leadership::leads`] right before each
//! write: it is true only until the renew deadline after the last renew the server took,
//! so a leader cut off from the API server stops acting before another can take over.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::effects::cluster::lease::{self, NewLease, Written};
use crate::team::election::{self, Decision, Observer, Timing};

/// Until when this replica may act as the leader (`None`: it does not lead).
#[derive(Debug, Clone)]
pub struct Leadership {
    rx: watch::Receiver<Option<Instant>>,
}

impl Leadership {
    /// Whether this replica leads now.
    pub fn leads(&self) -> bool {
        self.rx.borrow().is_some_and(|until| Instant::now() < until)
    }

    /// Waits until this replica leads.
    pub async fn acquired(&mut self) {
        while !self.leads() {
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// A leadership that never leads (tests, dry runs of the rule).
    #[cfg(test)]
    pub fn never() -> Self {
        let (_tx, rx) = watch::channel(None);
        Self { rx }
    }
}

/// Where the election Lease is and who this replica is.
#[derive(Debug, Clone)]
pub struct Ballot {
    /// The Lease's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// This replica's identity (`sweeper/<pod>`).
    pub me: String,
    /// The timing.
    pub timing: Timing,
}

/// Runs the election until `stop` fires, then releases the Lease if held.
pub fn start(
    client: kube::Client,
    ballot: Ballot,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(campaign(client, Arc::new(ballot), tx, stop));
    (Leadership { rx }, task)
}

async fn campaign(
    client: kube::Client,
    b: Arc<Ballot>,
    tx: watch::Sender<Option<Instant>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut observer = Observer::default();
    let mut leading = false;
    loop {
        let tried = Instant::now();
        // No single try may outlast the renew deadline.
        let round = tokio::time::timeout(
            b.timing.renew_deadline,
            one_round(&client, &b, &mut observer),
        );
        match round.await {
            Ok(Ok(true)) => {
                if !leading {
                    info!(identity = %b.me, lease = %format!("{}/{}", b.namespace, b.name), "leading: this sweeper acts now");
                }
                leading = true;
                // Counted from before the request: the server took it no earlier.
                let _ = tx.send(Some(tried + b.timing.renew_deadline));
            }
            Ok(Ok(false)) => {
                if leading {
                    warn!(identity = %b.me, "lost the lead: another sweeper holds the lease");
                    leading = false;
                }
                let _ = tx.send(None);
            }
            Ok(Err(e)) => warn!("leader election: {e}"),
            Err(_) => {
                warn!("leader election: the API server did not answer within the renew deadline")
            }
        }
        if leading && !tx.borrow().is_some_and(|u| Instant::now() < u) {
            warn!(identity = %b.me, "lost the lead: no renew within the renew deadline; acting stops");
            leading = false;
            let _ = tx.send(None);
        }
        tokio::select! {
            _ = tokio::time::sleep(b.timing.retry_period) => {}
            _ = stop.changed() => break,
        }
    }
    let _ = tx.send(None);
    if leading {
        release(&client, &b).await;
    }
}

/// One try to acquire or renew; `Ok(true)`: this replica holds the Lease now.
async fn one_round(
    client: &kube::Client,
    b: &Ballot,
    observer: &mut Observer,
) -> Result<bool, crate::effects::cluster::ClusterError> {
    let read = lease::get(client, &b.namespace, &b.name).await?;
    let now = Instant::now();
    observer.see(read.as_ref().map(|r| &r.record), now);
    let decision = election::decide(
        read.as_ref().map(|r| &r.record),
        &b.me,
        observer.unchanged_for(now),
        jiff::Timestamp::now(),
        &b.timing,
    );
    let written = match (decision, &read) {
        (Decision::Wait { .. }, _) => return Ok(false),
        (Decision::Create(r), _) => {
            let new = NewLease {
                labels: [(
                    "app.kubernetes.io/name".to_string(),
                    "telepolice-sweeper".to_string(),
                )]
                .into(),
                ..NewLease::default()
            };
            lease::create(client, &b.namespace, &b.name, &r, &new).await?
        }
        (Decision::Update(r), Some(read)) => lease::update(client, read, &r, |_| {}).await?,
        (Decision::Update(_), None) => return Ok(false),
    };
    Ok(match written {
        Written::Done(l) => {
            // What this replica wrote is what it saw last.
            observer.see(Some(&l.record), Instant::now());
            true
        }
        Written::Lost => false,
    })
}

/// Steps down: the Lease released so that another replica takes it at once.
async fn release(client: &kube::Client, b: &Ballot) {
    let Ok(Some(read)) = lease::get(client, &b.namespace, &b.name).await else {
        return;
    };
    if read.record.holder != b.me {
        return;
    }
    let r = election::released(&read.record, jiff::Timestamp::now());
    match tokio::time::timeout(
        Duration::from_secs(5),
        lease::update(client, &read, &r, |_| {}),
    )
    .await
    {
        Ok(Ok(Written::Done(_))) => info!(identity = %b.me, "released the leader lease"),
        Ok(Ok(Written::Lost)) => {}
        Ok(Err(e)) => warn!("releasing the leader lease: {e}"),
        Err(_) => warn!("releasing the leader lease: no answer"),
    }
}
