"""``zoomin bench``: memory, speed and accuracy of the two-stage model against the one-stage
model and a plain CNN on the whole image, measured side by side (``zoomin.bench.suite``).
Each memory/time figure comes from a fresh subprocess (``zoomin.bench.probe``)."""
