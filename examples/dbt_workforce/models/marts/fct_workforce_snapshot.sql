-- Headcount and compensation per simulation year and department.
select
    e.simulation_year,
    c.department,
    count(*) as headcount,
    sum(e.compensation_amount) as total_compensation
from {{ ref('fct_yearly_events') }} as e
join {{ ref('stg_census') }} as c using (employee_id)
group by all
