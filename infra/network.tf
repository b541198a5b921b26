# Egress only, the Lambdas' group apart from the runners'.

resource "aws_security_group" "runner" {
  name        = "${var.name}-runner"
  description = "warmfleet runners of ${var.name}: egress only"
  vpc_id      = local.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_egress_rule" "runner" {
  security_group_id = aws_security_group.runner.id
  description       = "GitHub, package mirrors, AWS APIs, whatever the jobs reach"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_security_group" "lambda" {
  name        = "${var.name}-lambda"
  description = "warmfleet Lambdas of ${var.name}: HTTPS egress only"
  vpc_id      = local.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_egress_rule" "lambda" {
  security_group_id = aws_security_group.lambda.id
  description       = "GitHub's and AWS's APIs"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}
