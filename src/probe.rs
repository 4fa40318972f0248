//! The linear probe: standardized features and L2-regularized multinomial logistic regression.
