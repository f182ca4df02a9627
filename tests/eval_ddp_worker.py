"""Run under torchrun by test_eval.py: each rank scores its share of the HellaSwag fixture with hellaswag_counts
(gloo, CPU), the counts are all-reduced as pretrain.py would, and rank 0 writes them to argv[1] as JSON.

    torchrun --standalone --nproc_per_node=2 tests/eval_ddp_worker.py counts.json 25
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from eval_helpers import hellaswag_rows, peaky_gpt  # noqa: E402

from gpt.eval import hellaswag_counts  # noqa: E402


def main(out: str, n: int) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    counts = hellaswag_counts(peaky_gpt(), hellaswag_rows()[:n], rank, world, batch_size=8)
    total = torch.tensor(counts, dtype=torch.long)  # (correct, correct_norm, n)
    dist.all_reduce(total)  # sum over ranks
    per_rank = [None] * world
    dist.all_gather_object(per_rank, counts.n)
    if rank == 0:
        Path(out).write_text(json.dumps({"total": total.tolist(), "per_rank_n": per_rank}), encoding="utf-8")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
