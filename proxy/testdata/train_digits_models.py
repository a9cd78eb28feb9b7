"""Train the four digits models of the selection tests.

Run: /usr/bin/python3 train_digits_models.py OUT_DIR

From scikit-learn's bundled digits (no download), split 70/30 with
random_state=0 as examples/sklearn/train_digits.py does, it fits four
estimators of clearly different accuracy and writes each as OUT_DIR/NAME.joblib:
knn (3 nearest neighbours), logreg (a logistic regression so strongly
regularized, C=1e-5, that it falls well behind), tree (a decision tree of
depth 4) and constant (the most frequent training label). The held-out
rows go to OUT_DIR/heldout.json as {"x": [[64 floats]...], "y": [labels],
"pred": {NAME: [each row's predicted label]}}; each model's held-out
accuracy to stderr.
"""
import json
import os
import sys

import joblib
from sklearn.datasets import load_digits
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier


def main():
    out = sys.argv[1]
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    models = {
        "knn": KNeighborsClassifier(n_neighbors=3),
        "logreg": LogisticRegression(C=1e-5, max_iter=5000),
        "tree": DecisionTreeClassifier(max_depth=4, random_state=0),
        "constant": DummyClassifier(strategy="most_frequent"),
    }
    pred = {}
    for name, model in models.items():
        model.fit(X_train, y_train)
        joblib.dump(model, os.path.join(out, name + ".joblib"))
        pred[name] = model.predict(X_test).tolist()
        print(f"{name} held-out accuracy {model.score(X_test, y_test):.3f}", file=sys.stderr)
    with open(os.path.join(out, "heldout.json"), "w") as f:
        json.dump({"x": X_test.tolist(), "y": y_test.tolist(), "pred": pred}, f)


if __name__ == "__main__":
    main()
