"""mmbixt classifiers; importing this package registers the released BiXT classifiers in timm."""
from .bixt import CLASSIFIER_NAMES, BiXTClassifier, create_classifier

__all__ = ['BiXTClassifier', 'CLASSIFIER_NAMES', 'create_classifier']
