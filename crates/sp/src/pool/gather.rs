//! Answers: gathering them from the workers' result rings through one `Select`, filing each
//! under its item's id, and a worker's failure (its items handed back as `Lost`, the optional
//! respawn).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::envelope::Envelope;
use super::reply::{Lost, Reply};
use super::{Pool, Worker, killed_status};
use crate::error::{Error, Fail, RecvTimeoutError, Result, TryRecvError, Violation};
use crate::limit::Limit;
use crate::select::Select;
use crate::value::Value;

impl<In: Value + 'static, Out: Value + 'static> Pool<In, Out> {
    pub(super) fn recv_inner(
        &mut self,
        limit: Limit,
        in_order: bool,
    ) -> Result<Option<Reply<In, Out>>, Fail> {
        loop {
            if in_order {
                let Some(mut first) = self.outstanding.first_entry() else {
                    return Ok(None);
                };
                if let Some(reply) = first.get_mut().take() {
                    first.remove();
                    self.forget_arrivals();
                    return Ok(Some(reply));
                }
            } else {
                while let Some(id) = self.arrivals.pop_front() {
                    if let Some(slot) = self.outstanding.get_mut(&id)
                        && let Some(reply) = slot.take()
                    {
                        self.outstanding.remove(&id);
                        return Ok(Some(reply));
                    }
                }
                if self.outstanding.is_empty() {
                    return Ok(None);
                }
            }
            self.gather(limit)?;
        }
    }

    /// Keeps `arrivals` from growing when answers are taken in submission order only.
    pub(super) fn forget_arrivals(&mut self) {
        if self.arrivals.len() > 2 * self.outstanding.len() + 64 {
            let outstanding = &self.outstanding;
            self.arrivals
                .retain(|id| outstanding.get(id).is_some_and(Option::is_some));
        }
    }

    /// Takes every answer that is there now; if there is none, waits (within `limit`) until a
    /// worker answers or goes down, and takes what it has.
    pub(super) fn gather(&mut self, limit: Limit) -> Result<(), Fail> {
        if self.live_workers() == 0 {
            return Err(Fail::Broken(Error::PeerGone));
        }
        let mut progress = false;
        for index in 0..self.workers.len() {
            progress |= self.drain(index);
        }
        if progress {
            return Ok(());
        }
        if matches!(limit, Limit::Now) {
            return Err(Fail::Wait);
        }
        let ready = {
            let mut select = Select::new().idle(self.idle.spins(), self.idle.yields());
            let mut indexes = Vec::with_capacity(self.workers.len());
            for (index, worker) in self.workers.iter_mut().enumerate() {
                if let Some(worker) = worker {
                    select.recv(&mut worker.results);
                    indexes.push(index);
                }
            }
            let res = match limit.remaining() {
                None => select.ready().map_err(Fail::Broken),
                Some(left) => select.ready_timeout(left).map_err(Fail::from),
            };
            indexes.get(res?).copied()
        };
        if let Some(index) = ready {
            self.drain(index);
        }
        Ok(())
    }

    /// Takes the answers worker `index` has ready; whether anything happened (an answer, or the
    /// worker's end).
    pub(super) fn drain(&mut self, index: usize) -> bool {
        let mut progress = false;
        loop {
            let Some(worker) = self.workers[index].as_mut() else {
                return progress;
            };
            match worker.results.try_recv() {
                Ok(answer) => {
                    progress = true;
                    if let Err(err) = self.record(index, answer) {
                        self.worker_failed(index, err);
                        return true;
                    }
                }
                Err(TryRecvError::Empty) => return progress,
                Err(TryRecvError::Broken(err)) => {
                    self.worker_failed(index, err);
                    return true;
                }
            }
        }
    }

    /// Files worker `index`'s answer under its item's id.
    pub(super) fn record(&mut self, index: usize, answer: Envelope<Out>) -> Result<()> {
        match self.workers[index].as_mut() {
            Some(worker) => file_answer(
                worker,
                index,
                answer,
                &mut self.outstanding,
                &mut self.arrivals,
            ),
            None => Ok(()),
        }
    }

    /// Worker `index` went down (`PeerGone`) or broke the protocol (anything else): takes the
    /// answers it committed (if it went down by itself), reaps it, and hands back its items.
    pub(super) fn worker_failed(&mut self, index: usize, err: Error) {
        let Some(mut worker) = self.workers[index].take() else {
            return;
        };
        let cause = if matches!(err, Error::PeerGone) {
            // Its answers committed before it went away come first, then `PeerGone`.
            let deadline = Instant::now() + self.config.stop_timeout;
            let mut cause = None;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match worker.results.recv_timeout(left) {
                    Ok(answer) => {
                        let filed = file_answer(
                            &mut worker,
                            index,
                            answer,
                            &mut self.outstanding,
                            &mut self.arrivals,
                        );
                        if let Err(err) = filed {
                            cause = Some(Arc::new(err));
                            break;
                        }
                    }
                    Err(RecvTimeoutError::Broken(Error::PeerGone) | RecvTimeoutError::Timeout) => {
                        break;
                    }
                    Err(RecvTimeoutError::Broken(err)) => {
                        cause = Some(Arc::new(err));
                        break;
                    }
                }
            }
            cause
        } else {
            Some(Arc::new(err))
        };
        let Worker {
            mut child,
            items,
            results,
            in_flight,
            ..
        } = worker;
        if cause.is_some() {
            let _ = child.kill();
        }
        drop((items, results));
        let status = crate::reap::reap(&mut child, self.config.stop_timeout)
            .unwrap_or_else(|_| killed_status());
        for (id, item) in in_flight {
            self.outstanding.insert(
                id,
                Some(Reply {
                    id,
                    worker: index,
                    result: Err(Lost {
                        item,
                        status,
                        cause: cause.clone(),
                    }),
                    item: None,
                }),
            );
            self.arrivals.push_back(id);
        }
        if self.config.respawn {
            // A failed respawn leaves the index empty; `respawn` can try again.
            let _ = self.respawn(index);
        }
    }
}

/// Files `answer` from worker `index` under its item's id (the item is dropped: its answer is
/// in).
fn file_answer<In: Value, Out: Value>(
    worker: &mut Worker<In, Out>,
    index: usize,
    answer: Envelope<Out>,
    outstanding: &mut BTreeMap<u64, Option<Reply<In, Out>>>,
    arrivals: &mut VecDeque<u64>,
) -> Result<()> {
    let Some(at) = worker.in_flight.iter().position(|(id, _)| *id == answer.id) else {
        return Err(Error::Protocol(Violation::UnexpectedReply {
            id: answer.id,
        }));
    };
    let item = worker.in_flight.remove(at).map(|(_, item)| item);
    worker.full = false;
    outstanding.insert(
        answer.id,
        Some(Reply {
            id: answer.id,
            worker: index,
            result: Ok(answer.value),
            item,
        }),
    );
    arrivals.push_back(answer.id);
    Ok(())
}
