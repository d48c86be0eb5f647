-- The census seed, typed: one row per employee at the start of the simulation.
select
    employee_id,
    cast(hire_date as date) as hire_date,
    department,
    cast(job_level as integer) as job_level,
    cast(annual_salary as decimal(12, 2)) as annual_salary,
    status = 'active' as is_active
from {{ ref('census') }}
