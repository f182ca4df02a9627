"""Write an OpenAI-layout TensorFlow checkpoint from arrays, then read every variable back with TensorFlow.

    python tests/make_tf_checkpoint.py ARRAYS.npz OUT_DIR [REFERENCE.npz]

Runs in its own process so TensorFlow and PyTorch never share one. OUT_DIR gets model.ckpt.{index,data-*,meta} and
`checkpoint`, as OpenAI's release has them; REFERENCE.npz gets tf.train.load_variable(...) of every variable listed
by tf.train.list_variables — the oracle our TensorFlow-free reader is compared with.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main(arrays_path: str, out_dir: str, reference_path: str | None = None) -> None:
    arrays = np.load(arrays_path)
    tf.compat.v1.disable_eager_execution()
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        assigns, feeds = [], {}
        for name in arrays.files:
            a = arrays[name]
            var = tf.compat.v1.get_variable(name, shape=a.shape, dtype=tf.float32)  # graph mode, like OpenAI's code
            ph = tf.compat.v1.placeholder(tf.float32, a.shape)  # fed, not embedded: graphs stay small at 124M
            assigns.append(var.assign(ph))
            feeds[ph] = a
        sess.run(assigns, feeds)
        saver = tf.compat.v1.train.Saver(save_relative_paths=True)  # `checkpoint` then says "model.ckpt", as OpenAI's
        saver.save(sess, os.path.join(out_dir, "model.ckpt"), write_meta_graph=True)
    if reference_path is None:  # the benchmark needs only the checkpoint
        return
    prefix = os.path.join(out_dir, "model.ckpt")
    reference = {name: tf.train.load_variable(prefix, name) for name, _ in tf.train.list_variables(prefix)}
    np.savez(reference_path, **reference)


if __name__ == "__main__":
    main(*sys.argv[1:])
