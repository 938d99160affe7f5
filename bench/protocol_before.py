"""The evaluator and training loop of methods/protocol.py as first committed (18a2610), kept verbatim as the
baseline that bench/bench_protocol.py times and tests/test_evaluation.py checks the fast versions against."""
from __future__ import annotations

import torch

from methods import protocol


class UInt8Evaluator:
    """uint8 pixel-major test images, gathered and converted to float at every evaluation of every task."""

    def __init__(self, stream, n_test, device, drop_last):
        self.n_scored = n_test - 1 if drop_last else n_test
        self.n_test = n_test
        images = torch.from_numpy(stream.test_images[: self.n_scored])
        padded = torch.cat([images, torch.zeros(images.shape[0], 1, dtype=torch.uint8)], 1)
        self.pixels = padded.t().contiguous().to(device)
        self.labels = torch.from_numpy(stream.test_labels[: self.n_scored]).to(device)
        self.maps = torch.from_numpy(stream.maps).to(device)
        self.n_tasks = stream.n_tasks

    def test_inputs(self, task):
        return self.pixels.index_select(0, self.maps[task]).float().div_(255.0).t()

    @torch.no_grad()
    def __call__(self, learner):
        was_training = learner.training
        learner.eval()
        correct = torch.stack([(learner(self.test_inputs(t), t).argmax(1) == self.labels).sum()
                               for t in range(self.n_tasks)])
        learner.train(was_training)
        return (correct.double() / self.n_test).tolist()


def reference_run(learner, stream, schedule, spec, device=torch.device("cpu")):
    """The original loop: a per-batch index gather of the task's examples, the uint8 evaluator."""
    evaluate = UInt8Evaluator(stream, spec["test_examples_per_task"], device,
                              spec["compat"]["eval_drop_last_test_example"])
    data = protocol.task_inputs(stream, schedule, device)
    log, seen, batch_i, current = protocol.EvalLog(), 0, 0, -1

    def record(label):
        log.acc.append(evaluate(learner))
        log.task.append(label)
        log.examples_seen.append(seen)

    learner.train()
    for t in range(stream.n_tasks):
        x_all, y_all = data[t]
        order = schedule.order[t].to(device)
        for b0 in range(0, len(order), spec["batch_size"]):
            if batch_i % spec["log_every"] == 0 or t != current:
                record(current if current >= 0 else t)
                current = t
            idx = order[b0: b0 + spec["batch_size"]]
            learner.observe(x_all[idx], t, y_all[idx])
            seen += len(idx)
            batch_i += 1
    record(current)
    return log
