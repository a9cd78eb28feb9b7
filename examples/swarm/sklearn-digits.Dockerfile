# The scikit-learn example with its digits model inside: the swarm runtime
# mounts nothing into a task, so the model travels in the image. Build from
# the repository root, after the sklearn image (docker-stack.yml says how):
#   docker build -f examples/swarm/sklearn-digits.Dockerfile -t sloproxy/sklearn-digits .
ARG BASE=sloproxy/sklearn
FROM $BASE
COPY examples/sklearn/digits_logreg.joblib /model/model.joblib
