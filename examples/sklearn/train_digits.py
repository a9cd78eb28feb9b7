"""Write digits_logreg.joblib, the model examples/quickstart.yaml serves.

Run: /usr/bin/python3 examples/sklearn/train_digits.py [OUT]

A logistic regression on scikit-learn's bundled digits data set (no
download): 8x8 images as 64 raw pixel values 0..16, labels 0..9. Trained on
70% of the rows (random_state=0), as the project's tests train theirs; the
held-out accuracy goes to stderr. Rerun it when a new scikit-learn cannot
load the committed file.
"""
import os
import sys

import joblib
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_logreg.joblib")
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    model = LogisticRegression(max_iter=5000, random_state=0).fit(X_train, y_train)
    joblib.dump(model, out)
    print(f"held-out accuracy {model.score(X_test, y_test):.3f}; wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
