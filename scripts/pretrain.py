#!/usr/bin/env python
"""Pretrain a GPT-2. The whole training loop is in main() below, top to bottom; gpt/ holds the small helpers.

    python scripts/pretrain.py                                         # GPT-2 124M on a CUDA GPU (configs/default.yaml)
    python scripts/pretrain.py --config configs/tiny.yaml --force-cpu  # a CPU-sized run (minutes)
    torchrun --standalone --nproc_per_node=8 scripts/pretrain.py       # 8 GPUs on one machine (DDP)
    python scripts/pretrain.py --config configs/tiny.yaml --force-cpu --resume --max-steps 800   # continue a run
    python scripts/pretrain.py --init-from weights/gpt2-124M.safetensors --data-source my_texts/ \
        --data-dir data/mine/prepared --learning-rate 1e-4            # continue OpenAI's GPT-2 on your own text

Every TrainConfig field (gpt/train/config.py) is a flag (gpt/train/cli.py): --max-steps 50, --model.n-layer 2,
--no-compile; --help lists them all. Outputs go to runs/<name>/: config.yaml, step_XXXXXX/ checkpoints + `latest`,
metrics.jsonl, loss.png, TensorBoard event files (tensorboard --logdir runs) and an offline W&B run
(wandb sync runs/<name>/wandb/offline-*). On a terminal a progress bar shows loss, tok/s and ETA; in a log file
(nohup, tmux with a log, CI) a plain line every --log-interval steps does.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package imports from the repo root

import datetime
import math
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from gpt.data import DataError, WindowSampler, eval_batches, is_prepared, load_prepared, prepare_data
from gpt.eval import EvalDataError, hellaswag_counts, load_task
from gpt.model import GPT
from gpt.tokenizer import VOCAB_SIZE, get_tokenizer
from gpt.train import (
    CudaGuardError,
    TrainConfig,
    apply_overrides,
    autocast_dtype,
    bf16_warning,
    compile_pays,
    configure_optimizer,
    data_parallel_split,
    device_peak_flops,
    dist_info_from_env,
    estimate_mfu,
    flops_per_token,
    grad_accum_steps,
    lr_at,
    parse_train_args,
    resolve_device,
)
from gpt.train.checkpoint import (
    capture_rng_state,
    check_resumable,
    latest_checkpoint,
    load_checkpoint_state,
    load_checkpoint_weights,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from gpt.train.device import COMPILE_ENV
from gpt.train.evaluate import eval_sample, evaluate
from gpt.train.pretrained import model_from_pretrained, with_pretrained_architecture
from gpt.train.signals import SIGPIPE, stop_on_signal
from gpt.train.tracking import Tracker
from gpt.utils import (
    atomic_write_text,
    cpu_threads,
    keep_freed_memory,
    progress_bar,
    set_seed,
    shared_machine_note,
    usable_cpus,
)


def main(argv: list[str] | None = None) -> int:
    args = parse_train_args(argv)
    cfg = args.config
    dinfo = dist_info_from_env()
    master = dinfo.is_main
    say = print if master else (lambda *a, **k: None)

    def error(message: str) -> None:
        # Under torchrun every process meets the same mistake. Rank 0 says it at once; the others wait a moment,
        # in which torchrun, seeing rank 0 fail, stops them: one line, and none lost when only another rank fails.
        if dinfo.local_rank:
            time.sleep(1.0)
        print(f"error: {message}", file=sys.stderr)

    def rank0_ready() -> bool:  # a startup barrier; False when rank 0 failed there (and said why): leave quietly
        try:
            dist.barrier()
            return True
        except RuntimeError:  # the peer closed: gloo's "Connection closed by peer", NCCL's abort
            return False

    # ---- resume: the run continues with the config saved in its checkpoint, plus what the command line changes --
    run_dir = cfg.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        error(f"the run directory {run_dir} is a file; pass another --out-dir (or --name)")
        return 1
    saved = None
    ckpt = latest_checkpoint(run_dir)
    if cfg.resume:
        if ckpt is None:
            error(f"--resume, but {run_dir} holds no checkpoint (no `latest` file)")
            return 1
        try:
            saved = load_checkpoint_state(ckpt)
            cfg = apply_overrides(TrainConfig.from_dict(saved["config"]), {**args.overrides, "out_dir": str(run_dir)})
            check_resumable(TrainConfig.from_dict(saved["config"]), cfg, run_dir)
        except ValueError as e:
            error(str(e))
            return 1
    elif ckpt is not None:
        error(
            f"{run_dir} already holds a run (latest checkpoint {ckpt.name}). Continue it with --resume, "
            "or start a new one elsewhere with --out-dir (or --name), or delete that directory."
        )
        return 1
    start_step = saved["step"] if saved else 0
    if cfg.init_from and saved is None:  # the weights' architecture, known before windows and accumulation are
        try:
            cfg = with_pretrained_architecture(cfg, dinfo.world_size)
        except (ValueError, FileNotFoundError) as e:
            error(f"--init-from {cfg.init_from}: {e}")
            return 1

    # ---- device: the CUDA guard --------------------------------------------------------------------------------------
    try:
        device = resolve_device(cfg, dinfo.local_rank)
    except (CudaGuardError, ValueError) as e:  # ValueError: a device name torch does not know
        error(str(e))
        return 1
    if dinfo.ddp:  # launched by torchrun: one process per GPU (nccl), or per CPU worker (gloo)
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls for whatever stays in float32
    else:  # threads only on the cores other programs leave free (gpt/utils.py; GPT_THREADS=N chooses)
        try:
            threads = cpu_threads(dinfo.world_size)
        except ValueError as e:
            error(str(e))
            return 2
        torch.set_num_threads(threads)
        keep_freed_memory()  # the step's big tensors reuse freed memory, without page faults (≈ 15% on tiny.yaml)
    amp_dtype = autocast_dtype(cfg, device)
    if master and bf16_warning(amp_dtype, device):
        print(bf16_warning(amp_dtype, device), file=sys.stderr, flush=True)
    # (fp32 on a CPU not made by Intel: GPT.forward sends its Linears to oneDNN by itself, gpt/onednn.py)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype != torch.float32 else nullcontext()
    # On the CPU the loss skips the (B, T, V) logits (gpt/loss.py: their memory traffic rivals the matmuls there);
    # on GPUs the plain logits + cross-entropy path is the well-trodden one, and torch.compile fuses it.
    logits_out = device.type != "cpu"

    # ---- data: prepared token files, made from data_source the first time --------------------------------------------
    try:
        if Path(cfg.data_dir).exists() and not Path(cfg.data_dir).is_dir():
            raise DataError(f"data_dir {cfg.data_dir} is a file; pass a directory (prepared data, or where it goes)")
        if dinfo.local_rank == 0 and not is_prepared(cfg.data_dir):
            if not cfg.data_source:
                raise DataError(
                    f"no prepared data in {cfg.data_dir} and no data_source to prepare it from; prepare it first: "
                    f"python scripts/prepare_data.py --dataset fineweb-edu --out-dir {cfg.data_dir} (or, for your "
                    "own text, pass --data-source FILE_OR_FOLDER and it is tokenized here)"
                )
            say(f"preparing {cfg.data_source} → {cfg.data_dir} (once)")
            prepare_data([cfg.data_source], cfg.data_dir, cfg.val_fraction, progress=master and cfg.progress)
        if dinfo.ddp and not rank0_ready():
            return 1
        data = load_prepared(cfg.data_dir)
        n_ids = data.meta.get("vocab_size", VOCAB_SIZE)  # the tokenizer's vocabulary: every id in the data is below
        if n_ids > cfg.model.vocab_size:  # an id past the embedding table would fail inside the first forward
            raise DataError(
                f"{cfg.data_dir} holds GPT-2 token ids up to {n_ids - 1}, but the model's vocabulary has only "
                f"{cfg.model.vocab_size} entries; use --model.vocab-size {n_ids} (or more)"
            )
        source = str(Path(cfg.data_source).resolve()) if cfg.data_source else None
        if source and source not in data.meta.get("inputs", [source]):
            say(f"note: {cfg.data_dir} was prepared from {data.meta['inputs']}, not {source}; training on it anyway "
                "(delete that folder, or pass another --data-dir, to prepare data_source instead)")  # fmt: skip
        seq_len = cfg.seq_len or cfg.model.context_length  # tokens per training window
        grad_accum = grad_accum_steps(cfg.total_batch_tokens, cfg.batch_size, seq_len, dinfo.world_size)
        train_sampler = WindowSampler(
            data.train, cfg.batch_size, seq_len, grad_accum, seed=cfg.seed, rank=dinfo.rank, world_size=dinfo.world_size
        )
        val_batches = eval_batches(
            data.val, cfg.eval_iters, cfg.batch_size, seq_len, cfg.seed + 1, dinfo.rank, dinfo.world_size
        )
    except (DataError, ValueError) as e:
        error(str(e))
        return 1

    # ---- HellaSwag during training: the file fetched once (rank 0), checked before any step is taken ---------------
    hellaswag = []
    if cfg.hellaswag_interval:
        try:
            if dinfo.local_rank == 0:
                fix = (f"Run again, set $GPT2_EVAL_MIRROR to a mirror, put hellaswag_val.jsonl into "
                       f"{cfg.hellaswag_data_dir} (or pass --hellaswag-data-dir DIR), or train without it: "
                       "--hellaswag-interval 0")  # fmt: skip
                load_task("hellaswag", cfg.hellaswag_data_dir, progress=master and cfg.progress, hint=fix)
            if dinfo.ddp and not rank0_ready():
                return 1
            hellaswag, _ = load_task("hellaswag", cfg.hellaswag_data_dir, download=False)
        except EvalDataError as e:
            error(str(e))
            return 1
        hellaswag = hellaswag[: cfg.hellaswag_examples or None]
        endings = get_tokenizer().encode_batch([" " + e for ex in hellaswag for e in ex["endings"]])
        if (longest := max(map(len, endings))) > cfg.model.context_length:  # the scorer would fail mid-run
            ctx = cfg.model.context_length
            error(f"HellaSwag endings run to {longest} tokens, more than model.context_length ({ctx}); use a longer "
                  "context, or --hellaswag-interval 0")  # fmt: skip
            return 1
        say(f"hellaswag: {len(hellaswag):,} examples every {cfg.hellaswag_interval} steps, completion style")

    # ---- model and optimizer -----------------------------------------------------------------------------------------
    set_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    try:
        if cfg.init_from and saved is None:  # e.g. converted OpenAI weights (cfg.model is already their config)
            model = model_from_pretrained(cfg.init_from, cfg.model.dropout, cfg.model.vocab_multiple)
            say(f"initialised from {cfg.init_from}")
        else:
            model = GPT(cfg.model)
        if saved is not None:
            load_checkpoint_weights(ckpt, model)
    except (ValueError, FileNotFoundError) as e:  # a damaged weights file
        error(str(e))
        return 1
    model.to(device).train()
    optimizer = configure_optimizer(
        model, cfg.learning_rate, cfg.weight_decay, (cfg.beta1, cfg.beta2), cfg.eps, device_type=device.type
    )
    if saved is not None:
        restore_training_state(saved, optimizer, train_sampler, dinfo.rank, dinfo.world_size)
    else:
        torch.manual_seed(cfg.seed + dinfo.rank)  # dropout masks differ between ranks
    raw_model = model  # the plain GPT: for saving and for text samples
    if cfg.compile and compile_pays(device):
        model = torch.compile(model)
    elif cfg.compile:
        why = ("on a CPU, where a compiled training step measured slower than eager (gpt/train/device.py: compile_pays)"
               if device.type == "cpu" else f"{COMPILE_ENV}=0")  # fmt: skip
        say(f"compile: skipped ({why}); {COMPILE_ENV}=1 compiles anyway")  # fmt: skip
    train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if dinfo.ddp else model

    # ---- logging, and what this run will do --------------------------------------------------------------------------
    tracker = None
    if master:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        tracker = Tracker(
            run_dir, cfg.to_dict(), run_name=cfg.name, tensorboard=cfg.tensorboard, wandb_mode=cfg.wandb_mode,
            wandb_project=cfg.wandb_project, resume_step=start_step if saved is not None else None,
        )  # fmt: skip
    enc = get_tokenizer()
    flops_tok = flops_per_token(cfg.model, seq_len)
    peak = cfg.peak_tflops * 1e12 if cfg.peak_tflops else device_peak_flops(device, amp_dtype)
    say(
        f"{'resuming at' if saved else 'starting'} step {start_step}/{cfg.max_steps} · {run_dir} · {device} "
        f"· {str(amp_dtype).removeprefix('torch.')} · {dinfo.world_size} process(es)\n"
        f"model {raw_model.num_params() / 1e6:.1f}M params · {cfg.total_batch_tokens:,} tokens/step = "
        f"{dinfo.world_size} × {grad_accum} micro-steps × {cfg.batch_size} × {seq_len} · data: train "
        f"{data.train.size:,} tokens, val {data.val.size:,}"
    )
    if device.type == "cpu":  # a busy machine, or more processes than CPUs: say so, and what trains faster
        cpus = usable_cpus()
        split = data_parallel_split(cfg.total_batch_tokens, cfg.batch_size, seq_len, cpus)
        note = shared_machine_note(threads, dinfo.local_world_size, cpus, split)
        if note:
            say(note)

    stop_requested = False
    exit_code = 0
    # A terminal gets the tqdm bar; a log file (nohup, tmux with a log, CI) a plain line every log_interval steps,
    # as nanoGPT prints: a bar written with '\r' into a file makes one endless line.
    terminal = sys.stderr.isatty()
    bar = progress_bar(
        total=cfg.max_steps, initial=start_step, unit="step", disable=not (master and cfg.progress and terminal)
    )
    t_loop = time.perf_counter()

    def log(line: str) -> None:
        """One line on stdout (above a terminal's bar), from rank 0. A stdout that cannot be written any more — the
        reader of `| tee log` was killed, the terminal closed — stops the run at the next step, with a checkpoint."""
        try:
            if master:
                bar.write(line)
        except OSError:  # BrokenPipeError, or EIO from a closed terminal
            stop.output_lost()  # `stop`: the StopRequest of the block below

    # ---- the loop: `step` counts optimizer steps done; checkpoint step_N holds the weights after N steps -------------
    # SIGINT/SIGTERM/SIGHUP set stop.signal: the loop finishes its step, writes a checkpoint and exits cleanly.
    with stop_on_signal(repeat_grace=2.0 if dinfo.ddp else 0.0) as stop:  # torchrun forwards Ctrl-C: one request
        for step in range(start_step, cfg.max_steps + 1):
            last = step == cfg.max_steps

            # -- validation: the same eval_iters random batches every time; at step 0, every eval_interval, at the end
            if (step % cfg.eval_interval == 0 or last) and not (saved is not None and step == start_step):
                val_loss = evaluate(model, val_batches, device, autocast, return_logits=logits_out, ddp=dinfo.ddp)
                if master:
                    log(f"step {step}: val loss {val_loss:.4f}")
                    tracker.log(step, {"val/loss": val_loss})
                    if cfg.sample_tokens > 0:
                        text = eval_sample(
                            raw_model, enc, cfg.sample_prompt, cfg.sample_tokens, cfg.seed, device, autocast
                        )
                        tracker.log_text(step, "samples/text", text)
                    tracker.plot_losses()

            # -- HellaSwag: each rank scores its share (the compiled model, not DDP's wrapper), the counts are summed
            hs_due = hellaswag and (step % cfg.hellaswag_interval == 0 or last)
            if hs_due and not (saved is not None and step == start_step):
                with autocast:
                    counts = hellaswag_counts(model, hellaswag, dinfo.rank, dinfo.world_size)
                counts = torch.tensor(counts, dtype=torch.long, device=device)  # (correct, correct_norm, n)
                if dinfo.ddp:
                    dist.all_reduce(counts)
                correct, correct_norm, n = counts.tolist()
                if master:
                    log(f"step {step}: hellaswag acc_norm {correct_norm / n:.4f}, acc {correct / n:.4f} ({n:,} ex.)")
                    tracker.log(step, {"eval/hellaswag_acc_norm": correct_norm / n, "eval/hellaswag_acc": correct / n})

            # -- checkpoint (rank 0 writes; every rank contributes its RNG state) --
            if step > start_step and (step % cfg.ckpt_interval == 0 or last or stop_requested):
                rng_states = [capture_rng_state()]
                if dinfo.ddp:
                    rng_states = [None] * dinfo.world_size
                    dist.all_gather_object(rng_states, capture_rng_state())
                if master:
                    state = training_state(optimizer, train_sampler, rng_states, cfg.to_dict(), dinfo.world_size)
                    path = save_checkpoint(run_dir, step, raw_model, state, keep=cfg.keep_checkpoints)
                    log(f"step {step}: saved {path}")
                if dinfo.ddp:
                    dist.barrier()
            if last or stop_requested:
                break

            # -- one optimizer step: grad_accum micro-batches, clip, AdamW --
            t0 = time.perf_counter()
            lr = lr_at(
                step, max_lr=cfg.learning_rate, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps,
                decay_steps=cfg.lr_decay_steps or cfg.max_steps,
            )  # fmt: skip
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for k, (x, y) in enumerate(train_sampler.next_step()):
                if device.type == "cuda":  # page-locked host memory: the copy below runs async, overlapping compute
                    x, y = x.pin_memory(), y.pin_memory()
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                # DDP averages gradients across ranks during backward; only the last micro-step needs that
                sync = train_model.no_sync() if dinfo.ddp and k < grad_accum - 1 else nullcontext()
                with sync:
                    with autocast:
                        loss = train_model(x, y, return_logits=logits_out).loss  # mean over this micro-batch's tokens
                    (loss / grad_accum).backward()  # gradients sum over micro-steps → the mean over the step's batch
                loss_sum += loss.detach()
            # mean loss over the whole step (all ranks) and "did any rank get a stop signal", in one all-reduce
            packed = torch.stack([loss_sum / grad_accum, torch.tensor(float(stop.signal is not None), device=device)])
            if dinfo.ddp:
                dist.all_reduce(packed)
                packed[0] /= dinfo.world_size
            clip = cfg.grad_clip if cfg.grad_clip > 0 else math.inf  # inf: no clipping, but the norm is still logged
            norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), clip)
            train_loss, grad_norm = packed[0].item(), norm.item()
            stop_requested = packed[1].item() > 0
            if not (math.isfinite(train_loss) and math.isfinite(grad_norm)):
                good = latest_checkpoint(run_dir)
                print(
                    f"error: the loss is {train_loss} (gradient norm {grad_norm}) at step {step + 1}; stopping without "
                    f"applying this update. Last good checkpoint: {good or 'none yet'}. Resume from it with --resume, "
                    "perhaps with a lower --learning-rate or a longer --warmup-steps.",
                    file=sys.stderr,
                )
                exit_code = 1
                break
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()  # honest timing: wait for the GPU
            tok_per_s = cfg.total_batch_tokens / (time.perf_counter() - t0)
            if master:
                metrics = {"train/loss": train_loss, "train/lr": lr, "train/grad_norm": grad_norm}
                metrics["train/tokens_per_sec"] = tok_per_s
                if peak:
                    metrics["train/mfu"] = estimate_mfu(tok_per_s / dinfo.world_size, flops_tok, peak)
                tracker.log(step + 1, metrics)
                bar.set_postfix(loss=f"{train_loss:.4f}", tok_s=f"{tok_per_s:,.0f}", refresh=False)
                bar.update(1)
                if cfg.progress and not terminal and ((step + 1) % cfg.log_interval == 0 or step + 1 == cfg.max_steps):
                    eta = (time.perf_counter() - t_loop) / (step + 1 - start_step) * (cfg.max_steps - step - 1)
                    log(f"step {step + 1}/{cfg.max_steps} · loss {train_loss:.4f} · lr {lr:.2e} · "
                        f"{tok_per_s:,.0f} tok/s · ETA {datetime.timedelta(seconds=round(eta))}")  # fmt: skip
            if stop_requested:
                why = "stdout lost" if stop.signal == SIGPIPE else "signal"  # (in DDP, stop.signal: rank 0's only)
                log(f"stop requested ({why}): finishing at step {step + 1} with a checkpoint")

    # ---- wrap up -----------------------------------------------------------------------------------------------------
    bar.close()
    if master:
        tracker.plot_losses()
        tracker.close()
        if stop_requested:
            resume = f"{dinfo.launcher} scripts/pretrain.py --resume --out-dir {run_dir}"
            log(f"stopped; continue with: {resume}")
            if stop.signal == SIGPIPE:  # stdout is gone: say why on stderr, which may still have a reader
                print(f"warning: stdout was closed, so the run stopped at step {step} with a checkpoint; "
                      f"continue with: {resume}", file=sys.stderr)  # fmt: skip
    if dinfo.ddp:
        dist.destroy_process_group()
    return exit_code


if __name__ == "__main__":
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
