//! A lost GPU device (a driver reset, the browser reclaiming it, `destroy()`): every
//! buffer on it is gone, so the worker opens a new device, uploads the model again
//! from the file it already has (no fetch), and a running training goes on from its
//! last save: the weights and moments kept in the session at each autosave (also in
//! OPFS). The steps after that save are done again, with the same data and schedule,
//! so the run still ends as an uninterrupted one would.

use classtune::model::Model;

use super::{EngineWorker, Loaded};
use crate::protocol::FromWorker;

/// Lost devices one run recovers from; after that the run fails with the reason.
const MAX_RECOVERIES: u32 = 3;

impl EngineWorker {
    /// After the device was lost mid-training: tells the page, reopens the GPU with
    /// the model and rolls the run back to its last save.
    pub(super) async fn recover(&self, loaded: &Loaded, reason: &str) -> Result<(), String> {
        let (step, recoveries) = {
            let mut session = self.session.borrow_mut();
            let s = session.as_mut().ok_or("no training session")?;
            s.saving.recoveries += 1;
            let step = s.state.as_ref().map_or(0, |state| state.step as u32);
            s.saving.rollback(step);
            (step, s.saving.recoveries)
        };
        if recoveries > MAX_RECOVERIES {
            return Err(format!(
                "the GPU device was lost {recoveries} times, most recently: {reason}"
            ));
        }
        self.post(&FromWorker::DeviceLost {
            message: reason.to_string(),
            step,
        });
        self.reopen(loaded).await
    }

    /// Before a request: a device lost while no training ran is replaced, and the
    /// model loaded onto the new one (the adapter is uploaded again when next used).
    pub(super) async fn recover_if_lost(&self) -> Result<(), String> {
        let lost = self.gpu.borrow().as_ref().and_then(|gpu| gpu.lost());
        let Some(reason) = lost.filter(|_| !self.training_active()) else {
            return Ok(());
        };
        let step = self
            .session
            .borrow()
            .as_ref()
            .and_then(|s| s.state.as_ref())
            .map_or(0, |state| state.step as u32);
        self.post(&FromWorker::DeviceLost {
            message: reason,
            step,
        });
        let loaded = self.model.borrow().clone();
        match loaded {
            Some(loaded) => self.reopen(&loaded).await,
            None => {
                self.gpu.borrow_mut().take();
                Ok(())
            }
        }
    }

    /// A new device, and the model's weights uploaded to it from the model's file.
    async fn reopen(&self, loaded: &Loaded) -> Result<(), String> {
        self.spare.borrow_mut().take();
        self.attached.set(None);
        self.gpu.borrow_mut().take();
        let gpu = self
            .gpu()
            .await
            .map_err(|e| format!("the GPU could not be reopened: {e}"))?;
        let model = Model::load_with_header(&gpu, &loaded.file, &loaded.gguf)
            .await
            .map_err(|e| format!("reloading the model onto the new device: {e}"))?;
        let mut current = loaded
            .model
            .try_borrow_mut()
            .map_err(|_| "the model is in use")?;
        // The old model's buffers belonged to the lost device; the adapter is off.
        *current = model;
        Ok(())
    }
}
