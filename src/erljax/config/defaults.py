"""Default configuration and start-up validation.

Every experiment config in `erljax.configs` starts from `default()` and
overrides what it needs. `validate()` (erljax.config.validation, re-exported
here) runs before anything is built and raises `ConfigError` naming the
offending key and value.

Step counts are env transitions summed over the parallel envs, as in the
paper (one vectorized step of N envs is N steps).
"""

import ml_collections
from ml_collections import config_dict

from erljax.raters import prompts as prompts_lib

# Re-exported: the validation API is used as erljax.config.defaults.validate
# etc.
from erljax.config.validation import (  # noqa: F401
  OPENAI_CONSTRAINTS,
  RATED,
  RATER_KINDS,
  REWARD_FRAMES,
  REWARD_MODELS,
  REWARD_SOURCES,
  SAMPLINGS,
  ConfigError,
  data_devices,
  first_session,
  replay_shards,
  reply_cache_dir,
  validate,
)


def default() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "reacher"
  # The method's name in the default workdir runs/<task>-<method>-<time>
  # (letters, digits, "_", "-", "."); the experiment configs set it.
  c.method = "sac"
  c.seed = 0
  c.num_seeds = 1  # seeds run at once, vmapped: seed, seed+1, ...
  c.num_envs = 8  # parallel training envs
  c.num_devices = 1  # devices the seed / env axes are split over
  c.episode_length = config_dict.placeholder(int)  # None: the task's default
  c.total_steps = 100_000
  c.seed_steps = 1_000  # uniform random actions before learning
  c.log_every = 5_000  # one compiled chunk; host work between chunks
  c.eval_every = 10_000
  c.num_eval_envs = 10  # deterministic evaluation episodes
  c.batch_size = 512
  c.updates_per_step = 1  # SAC updates per vectorized env step
  c.replay_capacity = 1_000_000
  # Replay blocks per seed, split over the devices of the env (data) axis;
  # batch_size is the global batch, batch_size / replay_shards items drawn
  # from each block (erljax.runtime.sharding). 0: one block per data device.
  c.replay_shards = 0
  # Where the run's files go: metrics, config.json, checkpoints, curve.png,
  # videos. "": the command line (erljax.train) makes
  # runs/<task>-<method>-<UTC time>; runner.run writes nothing. "none": no
  # files (the command line's opt-out).
  c.workdir = ""
  c.resume = False  # continue from workdir's latest checkpoint
  c.progress = True  # console progress bar (only on a terminal)
  c.tensorboard = True  # TensorBoard event files in workdir/tb
  # Weights & Biases, beside TensorBoard (erljax.io.metrics), when
  # `project` is set and wandb is installed (`pip install wandb`; the API
  # key from WANDB_API_KEY or `wandb login`, never from here).
  c.wandb = ml_collections.ConfigDict()
  c.wandb.project = ""  # "": off
  c.wandb.entity = ""  # team or user; "": the key's default
  c.wandb.mode = "online"  # or "offline": sync later with `wandb sync`
  # JAX's persistent compilation cache in ~/.cache/erljax/jax
  # (erljax.runtime.compile_cache): a rerun loads its programs instead of
  # compiling them. Also off with ERLJAX_COMPILE_CACHE=0.
  c.compile_cache = True
  # Precision of the networks' matrix products (erljax.runtime.precision,
  # docs/precision.md): "float32"; "bfloat16" (bf16 inputs, FP32
  # accumulation: faster where the chip has bf16 units); "tensorfloat32"
  # (TF32 on NVIDIA GPUs, FP32 on a CPU).
  c.matmul_precision = "float32"

  # Checkpoints (erljax.io.checkpoint), written when workdir is set: at the
  # first chunk boundary at or after every multiple of `every` env steps (0:
  # only at the end), at the end, and on SIGINT/SIGTERM.
  # Frames: size of what raters see; pictures of the run in the workdir.
  c.render = ml_collections.ConfigDict()
  c.render.height = 224
  c.render.width = 224
  c.render.rated_frames = False  # workdir/rated_frames/session_NNNN.png
  # workdir/rollout.gif of the final policy (the experiment configs turn it
  # on); drawn with OpenGL, else with erljax.vision.raycast, else skipped.
  c.render.rollout_video = False
  # Also a video every N evaluations, workdir/videos/step_<env steps>.gif.
  c.render.video_every = 0  # 0: off
  c.render.fps = 25.0

  # Several processes (one per host or GPU) running the same command
  # (erljax.runtime.distributed); unset keys come from the cluster's launcher
  # (srun, mpirun, ...). Process 0 asks the raters and writes workdir's files;
  # workdir must be on a file system every process sees (checkpoints).
  c.distributed = ml_collections.ConfigDict()
  # None: start when a key below is set or a launch of >1 process is
  # detected; True: always; False: never (one process).
  c.distributed.enabled = config_dict.placeholder(bool)
  c.distributed.coordinator_address = config_dict.placeholder(str)  # "h:p"
  c.distributed.num_processes = config_dict.placeholder(int)
  c.distributed.process_id = config_dict.placeholder(int)
  # JAX's cluster_detection_method, e.g. "mpi4py"; None: any it knows.
  c.distributed.cluster_detection = config_dict.placeholder(str)
  c.distributed.initialization_timeout = 300  # seconds

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 50_000
  c.checkpoint.keep = 2  # most recent checkpoints kept (>= 2)

  c.sac = ml_collections.ConfigDict()
  c.sac.hidden_sizes = (256, 256, 256)
  c.sac.actor_lr = 3e-4
  c.sac.critic_lr = 3e-4
  c.sac.alpha_lr = 1e-4
  c.sac.init_temperature = 0.1
  c.sac.discount = 0.99
  c.sac.tau = 0.005
  c.sac.target_update_period = 2
  c.sac.log_std_min = -5.0
  c.sac.log_std_max = 2.0
  c.sac.target_entropy = config_dict.placeholder(float)  # None: -|A|

  c.reward = ml_collections.ConfigDict()
  c.reward.source = "env"  # "env" or "learned" (from ratings)
  c.reward.scale = 1.0  # multiplies the env reward
  # Learned reward model and its rating loss (docs/method.md#the-rating-loss
  # to #reward-training; reference reward_model_vlm_rating.py). Defaults:
  # ERL-VLM = MAE + class weights + stratified batches.
  c.reward.feedback_type = "rating"  # or "preference" (RL-VLM-F baseline)
  # "mlp": RbRL's state-action MLP; "cnn": ERL-VLM's image network on the
  # post-step frame at frame_size^2 pixels (the paper's 224; on a CPU, 64
  # keeps every step and relabel cheap: experiments/results/image_reward.md).
  c.reward.model = "mlp"
  c.reward.frame_size = 224
  # Who draws the cnn's frames: "raycast" in JAX inside the program
  # (erljax.vision.raycast: flat-shaded, any backend, vmaps over seeds; seconds
  # a 224^2 MetaWorld frame on a CPU) or "opengl", MuJoCo's renderer on the
  # host through a callback (erljax.vision.host_frames: the VLM's frames, ~5
  # ms a 224^2 MetaWorld frame on a CPU; needs an OpenGL context).
  c.reward.frames = "raycast"
  c.reward.ensemble_size = 3
  c.reward.hidden_sizes = (256, 256, 256)
  c.reward.loss = "mae"  # "mae" (ERL-VLM) or "ce" (vanilla RbRL)
  c.reward.class_weighted = True
  c.reward.stratified = True
  c.reward.batch_size = 128  # 128 for state MLPs, 512 for images
  c.reward.max_epochs = 10
  c.reward.min_epochs = 2  # before an early stop (the reference's 2)
  c.reward.stop_accuracy = 0.97
  # Compared with stop_accuracy: "accuracy" (reference) or
  # "balanced_accuracy" (mean per-class recall; a 96%-"Bad" rating set
  # cannot pass it by predicting "Bad" everywhere).
  c.reward.stop_metric = "accuracy"
  c.reward.k = 30.0
  c.reward.label_smoothing = 0.0
  c.reward.lr = 3e-4

  # PEBBLE schedule (docs/method.md#the-loop; reference train_PEBBLE_VLM.py),
  # used when reward.source == "learned".
  c.feedback = ml_collections.ConfigDict()
  c.feedback.unsupervised = True  # k-NN state-entropy reward before feedback
  c.feedback.knn_k = 5
  c.feedback.unsupervised_steps = 9_000  # of pre-training after seed_steps
  # None: right after seed_steps + unsupervised_steps (pre-training on) or
  # right after seed_steps (off), as the reference's first session.
  c.feedback.first_session = config_dict.placeholder(int)
  c.feedback.interval = 5_000
  c.feedback.queries = 50  # per session
  c.feedback.budget = 10_000  # total queries sent
  # Queries come from the most recent query_window_episodes completed
  # episodes, counted across the envs: the reference's FIFO of its last 100
  # complete episodes (tunglm2203/erlvlm reward_model_vlm_rating.py,
  # RewardModel(max_size=100), add_data and get_queries). Before the first
  # episode has completed, from everything stored. query_window_steps, when
  # set, overrides it: the most recent query_window_steps transitions.
  c.feedback.query_window_episodes = 100
  c.feedback.query_window_steps = config_dict.placeholder(int)
  # Transitions per rated segment (H): 1 is ERL-VLM's one post-step frame;
  # RbRL rates H = 50 state segments (scripted rater only: a VLM rates one
  # frame). A segment's return sums its H rewards, rated over H x the range.
  c.feedback.segment_length = 1
  # "uniform" (ERL-VLM) or "disagreement" (RbRL's option: draw candidates x
  # queries, keep those the reward ensemble disagrees on most).
  c.feedback.sampling = "uniform"
  c.feedback.candidates = 10
  c.feedback.reset_critic = True  # after the first session
  c.feedback.warmup_updates = 100
  # Rating calls to a remote rater (a VLM service) run in worker threads while
  # training goes on; the reward is trained when the answers arrive (checked
  # between chunks). False: every session blocks until rated (the reference).
  # Local raters (scripted) always answer inline, so their runs are exact.
  c.feedback.asynchronous = True
  c.feedback.max_pending = 1  # sessions in flight; a due one waits
  # Seconds the end of training waits for the sessions still out, and a
  # checkpoint for them (SIGINT/SIGTERM cut both short); None: no limit.
  # Sessions not answered by a checkpoint stay out, and the checkpoint
  # holds the state from before they were requested (a resumed run asks
  # again: answers that came are in the reply cache).
  c.feedback.final_wait_s = 600.0
  c.feedback.drain_wait_s = 600.0

  c.rater = ml_collections.ConfigDict()
  c.rater.kind = "scripted"  # or a VLM: "openai", "gemini", "ollama"
  c.rater.noise = 0.0  # probability of a wrong label (scripted)
  # What a wrong label models (docs/rating_noise.md; erljax.raters.scripted):
  # "uniform": class-independent, a wrong label is any other class wherever
  #   the true value lies, like a VLM's hallucination (what MAE is for);
  # "neighbour": a wrong label is one class up or down, wherever the value;
  # "boundary": perception error, the value is seen with Gaussian noise and
  #   binned, so wrong labels lie near a class line, mostly one class off.
  c.rater.noise_kind = "uniform"
  # Scripted preferences: pairs whose true returns differ by at most this
  # fraction of the rated range are ties, not answered (RL-VLM-F's "-1").
  c.rater.tie_tolerance = 0.0
  c.rater.num_classes = config_dict.placeholder(int)  # None: the task's
  # What the scripted rater bins: "signal" = what a frame shows (the task's
  # rating_signal, e.g. reacher's tip-target distance without the control
  # cost), "reward" = the per-step env reward (RbRL's synthetic ratings).
  c.rater.rated = "signal"
  c.rater.range = config_dict.placeholder(tuple)  # (low, high); None: task's
  # VLM raters over HTTP (docs/method.md#querying-the-vlm; erljax.raters.vlm).
  # API keys only ever come from the environment variable named here, never
  # the config.
  c.rater.base_url = ""  # "" = the backend's default
  c.rater.model = ""  # required for VLMs (stage 1 / only stage)
  c.rater.rating_model = ""  # stage-2 model; "" = model
  c.rater.api_key_env = config_dict.placeholder(str)  # None: backend's
  c.rater.two_stage = True  # analysis, then text-only answer
  c.rater.constrained = True  # answer constrained to the class names
  c.rater.openai_constraint = "json_schema"  # or "structured_outputs" (vLLM)
  c.rater.temperature = 0.0
  c.rater.max_tokens = 0  # 0: the service's default
  # Seconds a request may take in all: connecting, waiting, reading the
  # whole reply (a server trickling bytes is cut off at it).
  c.rater.timeout = 60.0
  c.rater.max_retries = 5
  c.rater.backoff_base = 1.0  # seconds; doubles per retry, with jitter
  c.rater.backoff_max = 60.0
  c.rater.max_wait = 300.0  # longest server-requested wait honoured
  c.rater.concurrency = 8  # queries in flight
  # Circuit breaker (erljax.raters.http): after breaker_failures queries in
  # a row failed, or more than breaker_drop_rate of a session's, pause
  # breaker_pause seconds and ask a failed query again, up to
  # breaker_probes times; a service still down stops the run (exit code 4).
  c.rater.breaker_failures = 10
  c.rater.breaker_drop_rate = 0.5
  c.rater.breaker_pause = 30.0
  c.rater.breaker_probes = 3
  # Pacing shared by all seeds and all processes on the machine that rate
  # the same service (erljax.raters.pacing); 0 = no limit.
  c.rater.requests_per_minute = 0.0
  c.rater.limiter_dir = ""  # its files; "" = ~/.cache/erljax/limits
  # HTTP requests a run may send (retries included); reached, the run saves
  # a checkpoint and stops (exit code 4). 0 = no cap.
  c.rater.max_requests = 0
  # Reply cache: every paid answer is kept, so a crashed or resumed run
  # never pays for it again. None: workdir/rater_cache when a workdir is
  # set (else none); "" = no cache; or a directory (runs may share one).
  c.rater.cache_dir = config_dict.placeholder(str)
  c.rater.replay_only = False  # answer from the cache only, no service
  c.rater.prompt = ml_collections.ConfigDict(
    {name: "" for name in prompts_lib.TEMPLATE_NAMES}
  )  # "" = default
  return c
